"""finetune: all training flights + pretrained weights -> final checkpoint (Model)."""


from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from cloudml.platform import gpu_image


@dsl.component(base_image=gpu_image(), install_kfp_package=False)
def finetune(
    shards: Input[list[Dataset]], config_json: str, pretrained: Input[Model], model: Output[Model]
):
    from cloudml.pipeline_steps import run_finetune

    summary = run_finetune([s.path for s in shards], config_json, pretrained.path, model.path)
    model.metadata.update({k: summary[k] for k in ("best_epoch", "best_val_loss") if k in summary})
