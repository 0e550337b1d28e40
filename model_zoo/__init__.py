"""The model registry: name -> model class. `ctrbench models` lists it."""

from __future__ import annotations

from ctrbench.core.errors import unknown_name
from model_zoo.afn_plus import AFNPlus
from model_zoo.autoint_plus import AutoIntPlus
from model_zoo.base import CTRModel
from model_zoo.dcnv2 import DCNv2
from model_zoo.dlrm import DLRM
from model_zoo.finalmlp import FinalMLP
from model_zoo.logistic_regression import LogisticRegression
from model_zoo.masknet import MaskNet
from model_zoo.wukong import Wukong
from model_zoo.xdeepfm import XDeepFM

MODELS: dict[str, type[CTRModel]] = {
    cls.name: cls
    for cls in (AFNPlus, AutoIntPlus, DCNv2, DLRM, FinalMLP, LogisticRegression, MaskNet, Wukong, XDeepFM)
}

# The eight models of the Wukong paper's Table 2, in its order; `--models all` runs these.
TABLE2_MODELS = ["afn_plus", "autoint_plus", "dcnv2", "dlrm", "finalmlp", "masknet", "xdeepfm", "wukong"]


def get_model_class(name: str) -> type[CTRModel]:
    if name not in MODELS:
        raise unknown_name("model", name, MODELS)
    return MODELS[name]
