
from transformers import BertConfig


class TinyHashConfig(BertConfig):
    model_type = "tiny-hash-bert"
