"""Pure math of RL: advantage estimators, policy and value losses, KL control, and their registries."""
