"""Train: fit the configured architecture on the augmented training set, keep the best epoch by val mIoU
(or the last, ``train.keep``).

`--fold i` (the cv_train stages): cross-validation fold i.
"""

import marsseg.environment  # noqa: F401  (one clear line outside the project's environment)
from marsseg import identity, reporting, tracking
from marsseg.config import load_config
from marsseg.datasets import load_labelled
from marsseg.errors import stage_main
from marsseg.layout import fold_layout
from marsseg.losses import build_loss
from marsseg.models import build_model
from marsseg.train import loop, precision, report, resume, strategy


@stage_main
def main() -> None:
    layout = fold_layout(__doc__.splitlines()[0])
    # Everything the user can get wrong is checked before a single epoch runs.
    cfg = load_config()
    # Before any other TensorFlow call: a multiworker strategy configures the collective ops at start-up.
    worker = strategy.start_cluster(cfg.train.strategy)
    chief = worker is None or worker.is_chief
    loss = build_loss(cfg.loss)
    # Only the chief writes the outputs and the MLflow run; the other workers keep a copy in a scratch folder.
    tracker = tracking.Tracker(cfg.mlflow) if chief else tracking.Tracker.off()
    models = layout.models if chief else worker.scratch / "models"
    train_set, val_set = load_labelled(layout.augmented), load_labelled(layout.val)

    strategy.configure_determinism(cfg.seed)
    policy = precision.use_precision(cfg.train.precision)
    params = cfg.as_dict()
    run_identity = identity.RunIdentity.of(params, data_files=[layout.augmented, layout.val], fold=layout.fold)
    if worker:
        strategy.check_same_run(run_identity.key)
    checkpoint = resume.ResumableState(tracking.main_checkout_root() / ".cache" / "train" / run_identity.key
                                       if chief else worker.scratch / "checkpoint")

    with tracker.start(run_id=checkpoint.run_id(), run_name=run_identity.run_name(params),
                       tags=run_identity.tags(params)) as run:
        checkpoint.remember_run_id(run)
        tracker.log_params(run_identity.flat_params)
        reporting.note_training("train")
        result = loop.train(
            model_builder=lambda: build_model(cfg.model, seed=cfg.seed),
            loss=loss,
            train_set=train_set,
            val_set=val_set,
            train=cfg.train,
            seed=cfg.seed,
            checkpoint=checkpoint,
            on_epoch=report.epoch_logger(tracker),
        )
        summary = report.write_train_outputs(result, models, policy, on_gpu=precision.on_gpu(),
                                             metrics_name=layout.metrics_name("train") if chief else None)
        report.log_train_run(tracker, result, summary, models)
        if chief:
            tracking.tag_model(tracker, layout.model)
    checkpoint.clear()
    if worker:
        strategy.wait_for_all_workers()
    where = layout.model if chief else f"{models / 'model.keras'} (worker {worker.index}, not the chief: no outputs)"
    kept = (f"best val mIoU {result.best_val_miou:.4f} at epoch {result.best_epoch}"
            if cfg.train.keep == "best" else
            f"kept the last epoch, val mIoU {result.kept_val_miou:.4f} (best {result.best_val_miou:.4f} at epoch "
            f"{result.best_epoch})")
    print(f"train: {kept} of {result.epochs_run} ({result.seconds:.0f} s, {policy}) -> {where}")


if __name__ == "__main__":
    main()
