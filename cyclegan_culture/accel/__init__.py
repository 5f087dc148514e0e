"""Speed, kept apart from the networks: an execution plan decided once and applied to built networks as one swap
of layers for faster equivalents (same state dicts). The models never import this package; the engine and the
inference API make the plan from their options and hand it over."""

from cyclegan_culture.accel.plan import (CONV_ALGORITHMS, ExecutionPlan, PlanError, amp_dtype,
                                         inference_weights, make_plan)
from cyclegan_culture.accel.swap import swap_layers

__all__ = ["CONV_ALGORITHMS", "ExecutionPlan", "PlanError", "amp_dtype", "inference_weights", "make_plan", "swap_layers"]
