import copy
import dataclasses
import pickle

import pytest

from verl.config import PPOConfig
from verl.utils.config import freeze


def test_a_frozen_config_refuses_changes_at_every_depth_and_stays_frozen_in_copies():
    config = PPOConfig()
    config.trainer.total_epochs = 3  # before freezing, a config is built as usual
    freeze(config)
    sections = ((config, "data"), (config.trainer, "total_epochs"), (config.actor_rollout_ref.actor.optim, "lr"))
    for section, name in sections:
        message = f"{type(section).__name__}.{name}: the run's config is frozen"
        with pytest.raises(dataclasses.FrozenInstanceError, match=message):
            setattr(section, name, getattr(section, name))
    for copied in (copy.deepcopy(config), pickle.loads(pickle.dumps(config))):  # as Ray hands it to a worker
        with pytest.raises(dataclasses.FrozenInstanceError):
            copied.actor_rollout_ref.rollout.n = 8
        assert copied.trainer.total_epochs == 3
    changed = dataclasses.replace(config.trainer, total_epochs=5)  # a changed copy is a new, open config
    changed.seed = 1
    assert (changed.total_epochs, changed.seed, config.trainer.total_epochs) == (5, 1, 3)
