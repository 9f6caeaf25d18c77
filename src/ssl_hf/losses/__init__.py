"""Loss functions on tensors; reductions are explicit."""
