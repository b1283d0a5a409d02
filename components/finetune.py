"""finetune: all training flights + pretrained weights -> final checkpoint (Model).

No run id among the inputs: the stage state synced to the store (so a retry on a new pod
resumes from the last finished epoch) is keyed by code + config + data + the pretrained
checkpoint (cloudml.steps.common.training_state_key), so an unchanged re-run is a KFP
cache hit.
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from cloudml.cluster.settings import gpu_image


@dsl.component(base_image=gpu_image(), install_kfp_package=False)
def finetune(
    shards: Input[list[Dataset]],
    config_json: str,
    pretrained: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    curves: Output[Artifact],
    mlpipeline_ui_metadata: Output[Artifact],
):
    """Fine-tune one ensemble member from its pretrained weights on every flight except
    validation_flight (overweight_flight drawn overweight_factor times as often).

    Args:
        shards: Every flight's processed shard; validation_flight's is never read.
        config_json: The member's validated configuration (resolve-config's output).
        pretrained: The member's pretrained checkpoint (its sha256 is checked first).

    Returns:
        model: The finetuned checkpoint: model.pt, last.pt, history.json, summary.json, plus
            the pretrain history and summary.
        metrics: epochs_run, best_epoch, best_selection_loss (held-out tails of the
            training flights), stopped_early (1 = early stopping ended the stage).
        curves: Both stages' per-epoch curves as TensorBoard event files.
        mlpipeline_ui_metadata: Points the Kubeflow UI's TensorBoard viewer at curves.
    """
    from cloudml.steps import run_finetune
    from cloudml.steps.common import training_outputs, training_state_key

    dirs = [s.path for s in shards]
    key = training_state_key(config_json, dirs, pretrained.path)
    summary = run_finetune(dirs, config_json, pretrained.path, model.path, key)
    model.metadata.update({k: summary[k] for k in ("best_epoch", "best_selection_loss")})
    shown = training_outputs(summary, model.path, curves.path, curves.uri,
                             mlpipeline_ui_metadata.path, metrics.path)  # fmt: skip
    for name, value in shown.items():
        metrics.log_metric(name, value)
