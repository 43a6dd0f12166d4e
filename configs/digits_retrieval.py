"""A siamese CNN (bi-encoder) trained for retrieval on same-class digit pairs.

    ann train --config=configs/digits_retrieval.py --workdir=runs/digits_retrieval
    ann train --config=configs/digits_retrieval.py:triplet \
        --workdir=runs/digits_retrieval_triplet

Trains on `digit_pairs` (pairs drawn from the digits train split) and scores leave-one-out
retrieval on the held-out digits test images: eval/recall_at_1, eval/recall_at_5, eval/map.
The default loss is symmetric InfoNCE with in-batch negatives; `:triplet` uses the batch-hard
triplet loss instead.
"""

from ann import config as ann_config


def get_config(arg: str | None = None):
    arg = ann_config.variant(__file__, arg, "triplet")
    c = ann_config.base()
    c.experiment = "retrieval"
    c.model.name = "siamese"
    c.model.encoder = "cnn"  # any image model of the zoo: mlp, resnet, vit
    c.model.encoder_kwargs = {"features": (32, 64), "dense": 128}
    c.model.embedding_dim = 64
    c.data.name = "digit_pairs"
    c.data.train_split = "train"
    c.data.validation_split = "validation"  # chooses the best checkpoint
    c.data.eval_splits = ("test",)
    c.task.loss = "infonce"
    c.task.temperature = 0.1
    c.batch_size = 128  # pairs: 256 images a step
    c.total_steps = 300  # recall@1 is above 0.98 by step 100-200
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 50
    c.optimizer.weight_decay = 1e-4
    c.log_every_steps = 50
    c.eval_every_steps = 100
    c.checkpoint_every_steps = 100
    c.best_metric = "val/recall_at_1"
    c.best_mode = "max"
    if arg == "triplet":
        c.task = {"loss": "triplet", "margin": 0.5}  # 0.2: all triplets satisfied by step 200
    return c
