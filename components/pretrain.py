"""pretrain: the pretrain flight's shard -> pretrained checkpoint (Model, a directory).

No run id among the inputs: the stage state synced to the store (so a retry on a new pod
resumes from the last finished epoch) is keyed by code + config + data
(cloudml.steps.common.training_state_key), so an unchanged re-run is a KFP cache hit.
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from cloudml.cluster.settings import gpu_image


@dsl.component(base_image=gpu_image(), install_kfp_package=False)
def pretrain(
    shards: Input[list[Dataset]],
    config_json: str,
    model: Output[Model],
    metrics: Output[Metrics],
    curves: Output[Artifact],
    mlpipeline_ui_metadata: Output[Artifact],
):
    """Pretrain one ensemble member on pretrain_flight (earliest part trains, the time-ordered
    tail selects the epoch and stops early).

    Args:
        shards: Every flight's processed shard; only pretrain_flight's is read.
        config_json: The member's validated configuration (resolve-config's output).

    Returns:
        model: The pretrained checkpoint: model.pt (best epoch), last.pt, history.json,
            summary.json.
        metrics: epochs_run, best_epoch, best_selection_loss (held-out tail of the flight),
            stopped_early (1 = early stopping ended the stage).
        curves: Per-epoch curves as TensorBoard event files (train and selection-split loss,
            selection-split R², learning rate).
        mlpipeline_ui_metadata: Points the Kubeflow UI's TensorBoard viewer at curves.
    """
    from cloudml.steps import run_pretrain
    from cloudml.steps.common import training_outputs, training_state_key

    dirs = [s.path for s in shards]
    summary = run_pretrain(dirs, config_json, model.path, training_state_key(config_json, dirs))
    model.metadata.update({k: summary[k] for k in ("best_epoch", "best_selection_loss")})
    shown = training_outputs(summary, model.path, curves.path, curves.uri,
                             mlpipeline_ui_metadata.path, metrics.path)  # fmt: skip
    for key, value in shown.items():
        metrics.log_metric(key, value)
