"""RS+EPM (RecurSeed + EdgePredictMix, Jo, Yu & Kim, arXiv 2204.06754) trained by wseg on PASCAL VOC 2012 + SBD: the
released network (ResNet-50 OS16, CAM head, DeepLabV3+ head) with the training reconstructed in docs/rsepm.md (the
authors released inference only), its defaults: 30 epochs of 16 images (19 860 iterations, 512 crops, long side
320-640), SGD 0.1 (x1/x2/x10/x20 groups, wd 1e-4, Nesterov), poly 0.9, RecurSeed from epoch 5, EdgePredictMix from
epoch 15, CF(c=0.55, u=0.10). Then the released inference: seeds of train (``infer_rsepm.py``: scales 1, 0.5, 1.5,
2 + flips, the image's labels) scored over the background sweep 0.10..0.80, their CRF pseudo masks
(``convert_seed_to_pseudo_masks.py``: (1 - max)^2 background, CRF 10 / 1,3 / 67,3,4), and the network's
segmentation of train and val without and with the CRF. Paper targets (their trainer): single-stage val 69.5 with
CRF.

    python scripts/run_pipeline.py --config rsepm_voc --work_dir runs/rsepm_voc --voc12_root VOC2012 \\
        --set wsss_train.weights=resnet50-19c8e357.pth
Multi-GPU training: run the wsss_train stage with torchrun (``--list`` prints its command). Ablations: add
``--set wsss_train.mix=none`` (RS alone) or ``--set wsss_train.rs=False`` (EPM alone)."""

from wseg.pipeline import single_stage_method as _method

_base_ = "_base_/single_stage.py"

dataset = dict(root=None, train_list="train_aug", infer_list="train", eval_list="train", val_list="val")

_eval = dict(gt_dir="{gt}", classes="{classes}", logfile="{work}/eval_log.txt", out_dir="{work}/report",
             progress=False)


def _seed_stages(name, label, weights):
    """Train seeds of ``weights`` by the released procedure, their sweep, CRF pseudo masks and their score."""
    return {
        f"{name}_seeds": dict(script="scripts/infer_rsepm.py", describe=f"{label}: released seeds of train",
                              args=dict(root_dir="{root}", classes="{classes}", domain="train",
                                        weights=weights, out_dir="{work}/" + name + "_seeds", seed_format="npy")),
        f"{name}_eval_seeds": dict(script="scripts/eval.py",
                                   args=dict(_eval, list="{eval_list}", predict_dir="{work}/" + name + "_seeds",
                                             type="npy", curve=True, start=0.10, end=0.80, step=0.05, absent="nan"),
                                   report=[dict(label=f"{label} seeds (bg sweep 0.10-0.80)", split="train")]),
        f"{name}_pseudo": dict(script="scripts/convert_seed_to_pseudo_masks.py",
                               describe=f"{label}: CRF pseudo masks of the seeds",
                               args=dict(root_dir="{root}", classes="{classes}", domain="train",
                                         seed_dir="{work}/" + name + "_seeds", out_dir="{work}/" + name + "_pseudo")),
        f"{name}_eval_pseudo": dict(script="scripts/eval.py",
                                    args=dict(_eval, list="{eval_list}", predict_dir="{work}/" + name + "_pseudo",
                                              type="png", absent="nan"),
                                    report=[dict(label=f"{label} pseudo masks (seeds + CRF)", split="train")]),
    }


stages = dict(**_method("rsepm", "RS+EPM", "train"), **_seed_stages("rsepm", "RS+EPM", "{work}/models/rsepm.pth"))
