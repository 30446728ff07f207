
import torch
from transformers import BertModel

from .configuration_tinyhash import TinyHashConfig


class TinyHashModel(BertModel):
    """A custom architecture: BERT whose outputs are scaled by 2 (so a plain BERT differs)."""

    config_class = TinyHashConfig

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.last_hidden_state = out.last_hidden_state * 2.0
        return out
