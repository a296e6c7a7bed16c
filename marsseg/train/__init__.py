"""The train stage's library, one concept per module:

    data       tf.data input: each epoch's seeded row order, batches of raw images and masks
    strategy   where it runs: determinism, distribution over replicas
    precision  which number format: float32 or mixed bfloat16 / float16, ``auto`` from the hardware
    schedule   the learning rate over the run: plateau, cosine or one-cycle, with warm-up
    ema        the moving average of the weights: validated, picked and saved in place of the raw ones
    resume     the checkpoint folder of a run and the callback that fills it after every epoch
    loop       the fit itself: compile, resume, fit, best epoch by val mIoU
    report     what the stage leaves behind: model, history, metrics, pictures, MLflow record
"""
