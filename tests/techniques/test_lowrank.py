"""Low-rank factorisation (`techniques.lowrank`; full rank reproduces the model) and the
smaller zoo student (`techniques.student`)."""

import pytest

from conftest import same_outputs
from edgecompress import data, models
from edgecompress.errors import OptionError
from edgecompress.options import Method
from edgecompress.techniques import lowrank, student


@pytest.fixture(scope="module")
def images():
    return data.preprocess(data.shapes(16, size=(16, 16), seed=3).x, "unit")


def _full_ranks(model, method):
    return {layer.name: min(lowrank._matrix(layer, Method(method)).shape)
            for layer in model.layers if type(layer).__name__ in ("Conv2D", "Dense")}


@pytest.mark.parametrize("method", ["spatial", "channel"])
def test_full_rank_factorisation_reproduces_the_model(method, images):
    model = models.resnet8((16, 16, 3), bn_momentum=0.9)
    factorised = lowrank.apply(model, lowrank.Config(ranks=_full_ranks(model, method),
                                                     method=method))
    assert len(factorised.layers) > len(model.layers)
    same_outputs(factorised, model, images, atol=1e-4)


def test_lowrank_plan_saves_or_explains(images):
    model = models.resnet8((16, 16, 3), bn_momentum=0.9)
    decisions = lowrank.plan(model, lowrank.Config(ratio=0.5))
    assert all(d.parameters_after <= 0.5 * d.parameters_before + d.rank
               for d in decisions if d.rank)
    tiny = lowrank.plan(model, lowrank.Config(energy=1.0))
    assert all(d.rank is None and "not fewer" in d.reason for d in tiny)  # full rank saves nothing
    with pytest.raises(OptionError, match="exceeds its largest possible rank"):
        lowrank.apply(model, lowrank.Config(ranks={model.layers[-1].name: 11}))
    with pytest.raises(OptionError, match="ratio"):
        lowrank.Config(ratio=0)
    factorised = lowrank.apply(model, lowrank.Config(ratio=0.5))
    assert factorised.count_params() < 0.6 * model.count_params()


def test_student_is_a_smaller_zoo_model(trained):
    pupil = student.apply(trained[0], student.Config("resnet8", {"width": 0.5}))
    assert pupil.input_shape == trained[0].input_shape and pupil.output_shape[-1] == 10
    assert pupil.count_params() < 0.3 * models.resnet8((16, 16, 3)).count_params()
