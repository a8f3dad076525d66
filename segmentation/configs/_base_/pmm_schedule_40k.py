"""PMM's 40k schedule (Eli-YiLi/WSSS_MMSeg configs/_base_/schedules/schedule_40k.py, mmseg 0.x): SGD lr 0.01,
momentum 0.9, weight decay 5e-4, poly 0.9 with min_lr 5e-5 by iterations, checkpoint and evaluation every 4k."""
_base_ = "mmseg_schedule_40k.py"
lr = 0.01
min_lr = 0.00005
