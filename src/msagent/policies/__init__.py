"""Built-in policies: the simulated expert and the oracle baselines."""
