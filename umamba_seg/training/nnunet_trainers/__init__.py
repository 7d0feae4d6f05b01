"""The folder stock nnU-Net searches for our trainer classes (``nnUNet_extTrainer``).

nnunetv2 looks a ``-tr`` name up in its own trainers, then imports every top-level module of
each folder named in ``nnUNet_extTrainer`` by its bare name. This folder holds one uniquely named
module that re-exports our classes (the same class objects ``umamba-seg train`` uses)::

    export nnUNet_extTrainer=$(python -c "from umamba_seg.training.nnunet_trainers import FOLDER; print(FOLDER)")
    nnUNetv2_train 4 2d 0 -tr umambaTrainer_VMUNetAuthors -p umambaPlans_vmunet
"""

from __future__ import annotations

from pathlib import Path

FOLDER: Path = Path(__file__).resolve().parent
