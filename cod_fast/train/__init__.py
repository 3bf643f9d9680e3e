"""Training of the default model (``python -m cod_fast.train``) and its data preparation
(``python -m cod_fast.train.data``). Not imported by the codec at run time."""
