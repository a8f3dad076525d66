"""mmsegmentation's 80k schedule (mmseg 1.2.2 configs/_base_/schedules/schedule_80k.py): SGD lr 0.01, momentum 0.9,
weight decay 5e-4 on every parameter (no paramwise_cfg), PolyLR power 0.9 to eta_min 1e-4 by iterations,
checkpoint and validation every 8k."""
_base_ = "mmseg_schedule_40k.py"
max_iters = 80000
ckpt_every = 8000
val_every = 8000
