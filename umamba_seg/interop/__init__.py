"""Models trained elsewhere, brought into our layout.

``import-model`` reads a results folder written by the U-Mamba or xLSTM-UNet authors'
nnunetv2 forks (:mod:`.fork_plans` translates their plans, :mod:`.fork_checkpoint` reads
and renames their weights safely, :mod:`.import_model` writes our plans and checkpoints).
"""
