"""DPF Table 3: ResNet-50 on ImageNet-2012 at 224x224 (Lin et al. 2020,
Appendix A.2; recipe of Goyal et al. 2017).

90 epochs, global batch 1024, SGD + Nesterov 0.9, wd 1e-4, lr warm-up 0.1 ->
0.4 over 5 epochs, then / 10 at epochs 30, 60, 80. Pruned: every conv kernel;
the last FC layer, biases and BatchNorm stay dense. The sparsity schedule ends
at the second lr decay (epoch 60). The whole training set is used (no
validation split, as in the paper); "test" is the ImageNet validation set.
Compute in bfloat16 on GPU/TPU (``model.dtype = "auto"``), params and
optimizer state in float32. Data: streaming (grain) from an image folder
(``<data_dir>/train/<class>/*.JPEG``, ``<data_dir>/val/<class>/*.JPEG``) or a
prepared ``imagenet2012`` in tensorflow-datasets (``data.source = "tfds"``).

Argument ``method,target[,smoke]``: method dpf | incremental | dense |
one_shot_ft | snip; target 0.8 or 0.9 in the paper (DPF 75.48 / 74.55 top-1
vs dense 75.95; Incremental 74.86 / 73.77)::

    python -m experiments.run --config jaxprune/configs/dpf_imagenet_resnet50.py:dpf,0.9 \\
        --workdir runs/r50_dpf90 --config.data.data_dir=/data/imagenet

``smoke`` runs a few steps end to end on CPU: 64 training and 32 test images,
64x64 crops, batch 8, 3 epochs (the schedule, pipeline and checkpoints are the
real ones, only smaller).
"""

from jaxprune.configs.dpf_base import study_config

METHODS = ("dpf", "incremental", "dense", "one_shot_ft", "snip")


def imagenet_recipe(config):
    """Set ``config`` (a DPF study config) to the paper's ResNet-50 / ImageNet recipe."""
    config.model.name = "resnet50"
    config.model.dtype = "auto"
    d = config.data
    d.name, d.streaming, d.source, d.val_fraction = "imagenet2012", True, "auto", 0.0
    d.image_size, d.workers, d.threads = 224, 8, 4
    t = config.train
    t.epochs, t.batch_size, t.eval_batch_size = 90, 1024, 1024
    t.lr, t.warmup_epochs, t.warmup_init_lr = 0.4, 5.0, 0.1
    t.schedule, t.milestones, t.lr_decay_factor = "multistep", (30 / 90, 60 / 90, 80 / 90), 0.1
    t.momentum, t.nesterov, t.weight_decay = 0.9, True, 1e-4
    t.drop_remainder = True
    t.log_every, t.checkpoint_every, t.keep_checkpoints = 100, 1000, 2
    config.method.snip_batch_size = 1024
    return config


def get_config(arg: str | None = "dpf,0.9"):
    parts = [p.strip() for p in (arg or "dpf,0.9").split(",")]
    smoke = parts[-1] == "smoke"
    parts = parts[:-1] if smoke else parts
    if len(parts) != 2 or parts[0] not in METHODS:
        raise ValueError(f"argument {arg!r} must be 'method,target[,smoke]' with method in {list(METHODS)}")
    config = imagenet_recipe(study_config(parts[0], float(parts[1])))
    if smoke:
        d, t = config.data, config.train
        d.train_limit, d.test_limit, d.image_size, d.workers = 64, 32, 64, 0
        t.epochs, t.batch_size, t.eval_batch_size, t.warmup_epochs = 3, 8, 8, 1.0
        t.log_every, t.checkpoint_every = 2, 3
        config.method.update_every = 1
        config.method.snip_batch_size = 8
    return config
