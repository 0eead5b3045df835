"""Tensor-parallel plans: transformers' own per architecture, LoRA-aware matching, divisibility errors."""

import pytest
from transformers import AutoConfig

from anymal_lit.tensor_parallel import check_divisible


def test_head_counts_must_divide_by_the_tensor_parallel_size() -> None:
    config = AutoConfig.for_model("llama", num_attention_heads=8, num_key_value_heads=2, intermediate_size=96)
    check_divisible(config, 2)
    with pytest.raises(ValueError, match="num_key_value_heads=2"):
        check_divisible(config, 4)
    with pytest.raises(ValueError, match=r"num_attention_heads=8, num_key_value_heads=2, intermediate_size=96"):
        check_divisible(config, 5)
