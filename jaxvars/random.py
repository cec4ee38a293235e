"""``jv.random``: stateful random numbers drawn from a stream held in a variable."""

from ._random import bernoulli as bernoulli
from ._random import dropout as dropout
from ._random import key_variable as key_variable
from ._random import next_key as next_key
from ._random import normal as normal
from ._random import set_seed as set_seed
from ._random import uniform as uniform

__all__ = ["bernoulli", "dropout", "key_variable", "next_key", "normal", "set_seed", "uniform"]
