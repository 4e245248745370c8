"""External knowledge: a retrieval memory attached to the model (no weights change), and retrieval-augmented
evaluation."""
