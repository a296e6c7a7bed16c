"""Train: fit the configured architecture on the augmented training set, pick the best epoch by val mIoU."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python stages/train.py`

from marsseg.datasets import load_labelled
from marsseg.errors import stage_main
from marsseg.losses import build_loss, validate_loss_params
from marsseg.models import build_model, validate_model_params
from marsseg.params import load_params, section, seed_of
from marsseg import identity, tracking, train_report, training

TRAIN_DATA = Path("data/augment/train.npz")
VAL_DATA = Path("data/split/val.npz")
MODEL_DIR = Path("models")


@stage_main
def main() -> None:
    params = load_params()
    seed = seed_of(params)
    # Everything the user can get wrong is checked before a single epoch runs.
    model_params = validate_model_params(section(params, "model"))
    loss_params = validate_loss_params(section(params, "loss"))
    train_params = training.validate_train_params(section(params, "train"))
    tracker = tracking.Tracker(section(params, "mlflow"))
    train_set, val_set = load_labelled(TRAIN_DATA), load_labelled(VAL_DATA)

    training.configure_determinism(seed)
    on_gpu = training.use_mixed_precision_if_gpu()
    run_identity = identity.RunIdentity.of(params, data_files=[TRAIN_DATA, VAL_DATA])
    checkpoint = training.ResumableState(tracking.main_checkout_root() / ".cache" / "train" / run_identity.key)

    with tracker.start(run_id=train_report.resumable_run_id(checkpoint), run_name=run_identity.run_name(params),
                       tags=run_identity.tags(params)) as run:
        train_report.remember_run_id(checkpoint, run)
        tracker.log_params(run_identity.flat_params)
        result = training.train(
            model_builder=lambda: build_model(model_params, seed=seed),
            loss=build_loss(loss_params),
            train_set=train_set,
            val_set=val_set,
            train_params=train_params,
            seed=seed,
            checkpoint=checkpoint,
            on_epoch=lambda row: tracker.log_metrics(train_report.epoch_metrics(row), step=row["epoch"]),
        )
        summary = train_report.write_train_outputs(result, MODEL_DIR, on_gpu=on_gpu)
        train_report.log_train_run(tracker, result, summary, MODEL_DIR)
        tracking.write_run_file(run, tracker.uri)
    checkpoint.clear()
    print(f"train: best val mIoU {result.best_val_miou:.4f} at epoch {result.best_epoch} "
          f"of {result.epochs_run} ({result.seconds:.0f} s) -> {MODEL_DIR / 'model.keras'}")


if __name__ == "__main__":
    main()
