"""The location prior: fitted offsets, mirror images, and how it sharpens the network's guess."""

from __future__ import annotations

import numpy as np

from pipeline.labels import LOCATIONS
from pipeline.model.locate import MIN_SD_MM, LocationPrior, head_centre

LEFT_MCA = LOCATIONS.index("Left Middle Cerebral Artery")
RIGHT_MCA = LOCATIONS.index("Right Middle Cerebral Artery")
BASILAR = LOCATIONS.index("Basilar Tip")
ACOM = LOCATIONS.index("Anterior Communicating Artery")


def _prior() -> LocationPrior:
    rng = np.random.default_rng(0)
    left = np.array([-5.0, -12.0, 30.0]) + rng.normal(0, 3, (6, 3))
    basilar = np.array([-12.0, 5.0, 0.0]) + rng.normal(0, 3, (4, 3))
    acom = np.array([0.0, -22.0, 0.0]) + rng.normal(0, 3, (4, 3))
    locations = np.array([LEFT_MCA] * 6 + [BASILAR] * 4 + [ACOM] * 4)
    return LocationPrior.fit(locations, np.concatenate([left, basilar, acom]))


def test_a_side_learns_from_its_mirror_image():
    prior = _prior()
    left, right = np.array(prior.means[LEFT_MCA]), np.array(prior.means[RIGHT_MCA])
    assert left[2] > 20 and np.allclose(right, left * [1, 1, -1])
    assert abs(prior.means[BASILAR][2]) < 1e-9  # midline locations are symmetric
    assert prior.means[LOCATIONS.index("Left Posterior Communicating Artery")] is None  # never seen
    assert all(sd >= MIN_SD_MM for sd in prior.sd)


def test_position_decides_between_locations_the_network_cannot_tell_apart():
    prior = _prior()
    network = np.full((len(LOCATIONS), 3), 1.0 / len(LOCATIONS))
    offsets = np.array([[-5.0, -12.0, 30.0], [-5.0, -12.0, -30.0], [-12.0, 5.0, 0.0]])
    posterior = prior.combine(network, offsets)
    assert np.allclose(posterior.sum(axis=0), 1.0)
    assert list(posterior.argmax(axis=0)) == [LEFT_MCA, RIGHT_MCA, BASILAR]


def test_a_confident_network_is_not_overruled_nearby():
    prior = _prior()
    network = np.full((len(LOCATIONS), 1), 0.01)
    network[ACOM] = 1 - 0.01 * (len(LOCATIONS) - 1)
    posterior = prior.combine(network, np.array([[-4.0, -16.0, 0.0]]))  # between the ACom and the basilar tip
    assert posterior.argmax() == ACOM


def test_round_trip_through_json_values():
    prior = _prior()
    assert LocationPrior.from_dict(prior.to_dict()) == prior


def test_head_centre_of_a_mask():
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[2:4, 4:8, 0:10] = True
    assert np.allclose(head_centre(mask, 2), [2.5 * 2 + 0.5, 5.5 * 2 + 0.5, 4.5 * 2 + 0.5])
