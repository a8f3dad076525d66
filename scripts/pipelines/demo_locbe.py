"""LOC-BE on the demo's synthetic dataset (easy preset, 300 train / 60 val images of 128x96, 6 classes) with the
small ViT (``vit_tiny_patch16``, 192 channels, 12 blocks) on CPU: the published recipe at a demo budget, 200
iterations of 4 images on 96-pixel crops (LOC crops of 48), seg / reg / LOC joining after iteration 60, warm-up 30,
then the published inference (scales 1, 1.5, 1.25 + flips, CRF) on train (the pseudo labels) and val. About 4
minutes of training on 2 CPU cores.

The published recipe fine-tunes ImageNet weights; here the ViT starts from the stand-in weights
``{repo}/weights/standin/vit_tiny_patch16.pth`` once they are shipped (``--set wsss_train.weights=...``; ``None``
trains from scratch).

    python scripts/run_pipeline.py --config demo_locbe --work_dir runs/demo_locbe"""

_base_ = ["_base_/single_stage.py", "_base_/toy_data.py"]

dataset = dict(train_list="train", infer_list="train", eval_list="train", val_list="val")

stages = dict(
    data=dict(args=dict(num_train=300, num_val=60, num_classes=6, size="128x96", seed=0, difficulty="easy")),
    wsss_train=dict(args=dict(network="locbe", backbone="vit_tiny_patch16", weights=None,
                              session_name="{work}/models/locbe", batch_size=4, max_iters=200, crop_size=96,
                              local_crop_size=48, seg_start=60, warmup_iters=30, lr=1e-4, num_workers=1,
                              device="cpu", log_every=10, ckpt_every=50, seed=0)),
    infer_train=dict(args=dict(weights="{work}/models/locbe.pth", num_workers=1, device="cpu")),
    eval_train=dict(args=dict(num_workers=1), report=[dict(label="LOC-BE seg (pseudo labels)", split="train")]),
    eval_train_crf=dict(args=dict(num_workers=1), report=[dict(label="LOC-BE seg + CRF (pseudo labels)",
                                                                 split="train")]),
    infer_val=dict(args=dict(num_workers=1, device="cpu")),
    eval_val=dict(args=dict(num_workers=1), report=[dict(label="LOC-BE seg", split="val")]),
    eval_val_crf=dict(args=dict(num_workers=1), report=[dict(label="LOC-BE seg + CRF", split="val")]),
)
