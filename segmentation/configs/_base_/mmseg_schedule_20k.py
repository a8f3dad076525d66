"""mmsegmentation's 20k schedule (mmseg 1.2.2 configs/_base_/schedules/schedule_20k.py): SGD lr 0.01, momentum 0.9,
weight decay 5e-4 on every parameter (no paramwise_cfg), PolyLR power 0.9 to eta_min 1e-4 by iterations,
checkpoint and validation every 2k."""
lr = 0.01
momentum = 0.9
weight_decay = 0.0005
power = 0.9
min_lr = 0.0001
max_iters = 20000
ckpt_every = 2000
val_every = 2000
log_every = 50
