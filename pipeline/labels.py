"""The RSNA label columns (``../shared/docs/rsna-format.md``), in challenge order."""

LOCATIONS: tuple[str, ...] = (
    "Left Infraclinoid Internal Carotid Artery",
    "Right Infraclinoid Internal Carotid Artery",
    "Left Supraclinoid Internal Carotid Artery",
    "Right Supraclinoid Internal Carotid Artery",
    "Left Middle Cerebral Artery",
    "Right Middle Cerebral Artery",
    "Anterior Communicating Artery",
    "Left Anterior Cerebral Artery",
    "Right Anterior Cerebral Artery",
    "Left Posterior Communicating Artery",
    "Right Posterior Communicating Artery",
    "Basilar Tip",
    "Other Posterior Circulation",
)
ANEURYSM_PRESENT = "Aneurysm Present"
LABEL_COLUMNS: tuple[str, ...] = LOCATIONS + (ANEURYSM_PRESENT,)
MODALITIES: tuple[str, ...] = ("CTA", "MRA", "MRI T2", "MRI T1post")


def mirrored_location(name: str) -> str:
    """The location a left-right flip of the head turns ``name`` into."""
    if name.startswith("Left "):
        return "Right " + name[len("Left "):]
    if name.startswith("Right "):
        return "Left " + name[len("Right "):]
    return name


# Index permutation that a left-right flip applies to the 13 location columns.
MIRROR_PERMUTATION: tuple[int, ...] = tuple(LOCATIONS.index(mirrored_location(n)) for n in LOCATIONS)


# Artery labels of the vessel label maps (``segmentations/``): value i + 1 is VESSEL_LABELS[i];
# 0 is background. The demo writes them; a real map may hold other classes (any positive
# value is a vessel, `vessel_class` maps what it does not know to "Other artery").
VESSEL_LABELS: tuple[str, ...] = LOCATIONS + ("Other artery",)
OTHER_ARTERY = len(VESSEL_LABELS)  # its label value


def vessel_label(location: str | None) -> int:
    """The label value of an artery of ``location`` (None: an artery of no RSNA location)."""
    return LOCATIONS.index(location) + 1 if location is not None else OTHER_ARTERY


# Label values after a left-right flip (index: value before).
MIRRORED_VESSEL_LABELS: tuple[int, ...] = (0, *(m + 1 for m in MIRROR_PERMUTATION), OTHER_ARTERY)
