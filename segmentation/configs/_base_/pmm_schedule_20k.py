"""PMM's 20k schedule (Eli-YiLi/WSSS_MMSeg configs/_base_/schedules/schedule_20k.py, mmseg 0.x): SGD lr 0.005,
momentum 0.9, weight decay 5e-4, poly 0.9 with min_lr 1e-4 by iterations, checkpoint and evaluation every 2k."""
_base_ = "mmseg_schedule_20k.py"
lr = 0.005
min_lr = 0.0001
