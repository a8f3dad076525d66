"""The dense CRF of deeplab-pytorch's DeepLab v2 (ResNet-101, VOC), which usr922/wseg's DeepLab tests name
(``dense_crf_from_deeplabv2``) and PMM's segmentation test uses: 10 mean-field iterations, Gaussian kernel 3 / 1,
bilateral kernel 4 / 67 / 3."""
crf = True
crf_iters = 10
crf_pos_w = 3
crf_pos_xy_std = 1
crf_bi_w = 4
crf_bi_xy_std = 67
crf_bi_rgb_std = 3
