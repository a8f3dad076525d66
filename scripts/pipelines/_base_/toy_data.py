"""The embedded default dataset: the synthetic VOC-format dataset (scripts/make_toy_voc.py) written into the work
folder by the first stage. Derived configs set its flags (``stages.data.args``)."""

dataset = dict(root="{work}/data")

stages = dict(
    data=dict(script="scripts/make_toy_voc.py", describe="synthetic VOC-format dataset", creates_root=True,
              args=dict(out="{work}/data")),
)
