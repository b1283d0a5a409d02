"""pretrain: the pretrain flight's shard -> pretrained checkpoint (Model, a directory).

run_id (the KFP job id) keys the stage state synced to the store, so a retry on a new pod
resumes from the last finished epoch.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from cloudml.cluster.settings import gpu_image


@dsl.component(base_image=gpu_image(), install_kfp_package=False)
def pretrain(shards: Input[list[Dataset]], config_json: str, run_id: str, model: Output[Model]):
    from cloudml.steps import run_pretrain

    summary = run_pretrain([s.path for s in shards], config_json, model.path, run_id)
    model.metadata.update({k: summary[k] for k in ("best_epoch", "best_selection_loss") if k in summary})
