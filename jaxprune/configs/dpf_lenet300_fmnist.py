"""DPF study at CPU scale: LeNet-300-100 on Fashion-MNIST, 60 epochs, batch 128,
SGD + Nesterov 0.9, lr 0.1 divided by 10 at 50% and 75%, wd 1e-4. The sparsity
schedule reaches the target at epoch 45 (the second decay). Prunable: both
hidden kernels (the last layer, biases stay dense). Fine-tuning (One-shot P+FT
and the "+FT" rows): 12 epochs, the paper's 60 per 300 training epochs scaled to
this 60-epoch budget.

    python -m experiments.run --config jaxprune/configs/dpf_lenet300_fmnist.py:dpf,0.95 --workdir runs/x
    # methods: see jaxprune/configs/dpf_base.py METHODS; default dpf,0.95
"""

from jaxprune.configs.dpf_base import parse_arg, study_config


def get_config(arg: str | None = None):
    method, target = parse_arg(arg, "dpf", 0.95)
    config = study_config(method, target, finetune_epochs=12)
    config.data.name = "fashion_mnist"
    config.model.name = "lenet300"
    t = config.train
    t.epochs = 60
    t.lr = 0.1
    t.weight_decay = 1e-4
    t.eval_batch_size = 1000
    t.log_every = 100
    t.keep_checkpoints = 1
    return config
