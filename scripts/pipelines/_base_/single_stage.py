"""The single-stage WSSS recipe (ToCo, LOC-BE, ...): one network trained from image-level labels
(scripts/wsss_train.py, the method's published defaults), its predictions of the training images (the pseudo labels
the papers score on VOC train) and of val (the segmentation result), each without and with the method's published
CRF, evaluated. Derived configs set the dataset, ``stages.wsss_train.args.network`` and any stage value."""

dataset = dict(root=None, classes=None, train_list="train_aug", infer_list="train", val_list="val")

_eval = dict(gt_dir="{gt}", classes="{classes}", logfile="{work}/eval_log.txt", out_dir="{work}/report", type="png",
             progress=False)

stages = dict(
    wsss_train=dict(script="scripts/wsss_train.py", describe="train the single-stage network",
                    args=dict(voc12_root="{root}", classes="{classes}", train_list="{train_list}",
                              session_name="{work}/models/wsss")),
    infer_train=dict(script="scripts/wsss_infer.py", describe="predictions (+ CRF) of the training images",
                     args=dict(voc12_root="{root}", classes="{classes}", weights="{work}/models/wsss.pth",
                               infer_list="{infer_list}", out_pred="{work}/pred_train",
                               out_crf="{work}/pred_train_crf")),
    eval_train=dict(script="scripts/eval.py", args=dict(_eval, list="{eval_list}", predict_dir="{work}/pred_train"),
                    report=[dict(label="Segmentation (pseudo labels)", split="train")]),
    eval_train_crf=dict(script="scripts/eval.py",
                        args=dict(_eval, list="{eval_list}", predict_dir="{work}/pred_train_crf"),
                        report=[dict(label="Segmentation + CRF (pseudo labels)", split="train")]),
    infer_val=dict(script="scripts/wsss_infer.py", describe="predictions (+ CRF) of val", args_from="infer_train",
                   args=dict(infer_list="{val_list}", out_pred="{work}/pred_val", out_crf="{work}/pred_val_crf")),
    eval_val=dict(script="scripts/eval.py", args=dict(_eval, list="{val_list}", predict_dir="{work}/pred_val"),
                  report=[dict(label="Segmentation", split="val")]),
    eval_val_crf=dict(script="scripts/eval.py", args=dict(_eval, list="{val_list}", predict_dir="{work}/pred_val_crf"),
                      report=[dict(label="Segmentation + CRF", split="val")]),
)
