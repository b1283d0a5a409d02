"""finetune: all training flights + pretrained weights -> final checkpoint (Model).

run_id (the KFP job id) keys the stage state synced to the store, so a retry on a new pod
resumes from the last finished epoch.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from cloudml.cluster.settings import gpu_image


@dsl.component(base_image=gpu_image(), install_kfp_package=False)
def finetune(
    shards: Input[list[Dataset]],
    config_json: str,
    pretrained: Input[Model],
    run_id: str,
    model: Output[Model],
):
    from cloudml.steps import run_finetune

    summary = run_finetune(
        [s.path for s in shards], config_json, pretrained.path, model.path, run_id
    )
    model.metadata.update({k: summary[k] for k in ("best_epoch", "best_selection_loss") if k in summary})
