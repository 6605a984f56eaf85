"""What the DICOM standard requires of the images the writer produces, beyond pixels and
geometry: the General Study, Series and Equipment modules, the CT and MR Image modules, and
the functional groups and image-level attributes of the Enhanced CT and MR Image IODs, with
the values of a plausible synthetic acquisition. With them every file passes David Clunie's
``dciodvfy`` without an Error line (tests/test_dicom_conformance.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pipeline import __version__

MANUFACTURER = "Aneurysm detection project (synthetic phantom)"
STUDY_DATE, STUDY_TIME = "20260101", "120000"


@dataclass(frozen=True)
class Protocol:
    """The acquisition parameters an MR series records (TR and TE in ms, flip angle in
    degrees) and its contrast, as the Enhanced MR IOD names it."""

    scanning_sequence: str  # GR (gradient echo), SE (spin echo)
    sequence_variant: str  # SP (spoiled), SK (segmented k-space)
    acquisition_type: str  # 2D or 3D
    repetition_ms: float
    echo_ms: float
    echo_train: int
    flip_deg: float
    contrast: str  # FLOW_ENCODED, T1, T2

    @property
    def pulse_sequence(self) -> str:
        return "GRADIENT" if self.scanning_sequence == "GR" else "SPIN"


#: Typical protocols of the RSNA MR modalities: 3D time-of-flight MRA, 2D turbo spin-echo T2,
#: 3D spoiled gradient-echo T1 after contrast.
PROTOCOLS = {
    "MRA": Protocol("GR", "SP", "3D", 23.0, 3.4, 1, 18.0, "FLOW_ENCODED"),
    "MRI T2": Protocol("SE", "SK", "2D", 4000.0, 100.0, 16, 90.0, "T2"),
    "MRI T1post": Protocol("GR", "SP", "3D", 8.0, 3.0, 1, 12.0, "T1"),
}


def protocol_of(name: str) -> Protocol:
    """The protocol an MR series named ``name`` records (`PROTOCOLS`; a T1 gradient echo for
    any other name)."""
    return PROTOCOLS.get(name, PROTOCOLS["MRI T1post"])


def _set(ds: Dataset, **values) -> Dataset:
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _item(**values) -> Dataset:
    return _set(Dataset(), **values)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def add_common_modules(ds: Dataset) -> None:
    """General Study, General Series, Frame of Reference and General Equipment attributes
    that are not the writer's geometry or identifiers (Type 2 ones empty where unknown)."""
    _set(ds, StudyDate=STUDY_DATE, StudyTime=STUDY_TIME, SeriesDate=STUDY_DATE, SeriesTime=STUDY_TIME,
         ReferringPhysicianName="", StudyID="1", AccessionNumber="", PatientPosition="HFS", BodyPartExamined="HEAD",
         PositionReferenceIndicator="", Manufacturer=MANUFACTURER, ManufacturerModelName="pipeline.io.dicomwriter",
         DeviceSerialNumber="0", SoftwareVersions=__version__, AcquisitionNumber=1)


def add_ct_image(ds: Dataset) -> None:
    """The CT Image module's acquisition attributes."""
    ds.KVP = "120"


def add_mr_image(ds: Dataset, protocol: Protocol) -> None:
    """The MR Image module's acquisition attributes."""
    _set(ds, ScanningSequence=protocol.scanning_sequence, SequenceVariant=protocol.sequence_variant, ScanOptions="",
         MRAcquisitionType=protocol.acquisition_type, RepetitionTime=f"{protocol.repetition_ms:g}",
         EchoTime=f"{protocol.echo_ms:g}", EchoTrainLength=protocol.echo_train, FlipAngle=f"{protocol.flip_deg:g}",
         MagneticFieldStrength="3")


def add_enhanced_image(ds: Dataset, modality: str, protocol: Protocol | None) -> None:
    """Image-level attributes of the Enhanced CT / MR Image IODs: the multi-frame common
    module, the dimension organisation (one stack, frames by their position in it), the
    image description and, for MR, the acquisition's nucleus and field."""
    _set(ds, InstanceNumber=1, ContentDate=STUDY_DATE, ContentTime=STUDY_TIME, AcquisitionDateTime=STUDY_DATE + STUDY_TIME,
         AcquisitionDuration=60.0, ContentQualification="RESEARCH", BurnedInAnnotation="NO", LossyImageCompression="00",
         PresentationLUTShape="IDENTITY", PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
         VolumeBasedCalculationTechnique="NONE", AcquisitionContextSequence=Sequence([]))
    organisation = f"{ds.SeriesInstanceUID}.1" if len(ds.SeriesInstanceUID) <= 62 else ds.SeriesInstanceUID
    ds.DimensionOrganizationSequence = Sequence([_item(DimensionOrganizationUID=organisation)])
    ds.DimensionIndexSequence = Sequence([
        _item(DimensionOrganizationUID=organisation, DimensionIndexPointer=0x00209056,
              FunctionalGroupPointer=0x00209111, DimensionDescriptionLabel="Stack ID"),
        _item(DimensionOrganizationUID=organisation, DimensionIndexPointer=0x00209057,
              FunctionalGroupPointer=0x00209111, DimensionDescriptionLabel="In-Stack Position"),
    ])
    if modality == "MR":
        image_type = "ANGIO" if protocol.contrast == "FLOW_ENCODED" else "VOLUME"
        _set(ds, ComplexImageComponent="MAGNITUDE", AcquisitionContrast=protocol.contrast, ResonantNucleus="1H",
             KSpaceFiltering="NONE", MagneticFieldStrength="3", ApplicableSafetyStandardAgency="IEC",
             ImageType=["ORIGINAL", "PRIMARY", image_type, "NONE"])
        add_mr_pulse_sequence(ds, protocol)
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]


def add_mr_pulse_sequence(ds: Dataset, protocol: Protocol) -> None:
    """The MR Pulse Sequence module of an original Enhanced MR image."""
    spin, train, three_d = protocol.pulse_sequence == "SPIN", protocol.echo_train > 1, protocol.acquisition_type == "3D"
    _set(ds, PulseSequenceName={"FLOW_ENCODED": "TOF3D", "T2": "TSE2D", "T1": "SPGR3D"}[protocol.contrast],
         MRAcquisitionType=protocol.acquisition_type, EchoPulseSequence=protocol.pulse_sequence,
         MultiPlanarExcitation="NO" if three_d else "YES", PhaseContrast="NO",
         TimeOfFlightContrast="YES" if protocol.contrast == "FLOW_ENCODED" else "NO", SteadyStatePulseSequence="NONE",
         EchoPlanarPulseSequence="NO", SaturationRecovery="NO", SpectrallySelectedSuppression="NONE",
         OversamplingPhase="NONE", GeometryOfKSpaceTraversal="RECTILINEAR",
         SegmentedKSpaceTraversal="PARTIAL" if train else "SINGLE", RectilinearPhaseEncodeReordering="LINEAR",
         NumberOfKSpaceTrajectories=1)
    if spin:  # conditional attributes: only where their condition holds
        ds.MultipleSpinEcho = "YES" if train else "NO"
    if three_d:
        ds.CoverageOfKSpace = "FULL"


def shared_acquisition_groups(modality: str, protocol: Protocol | None, matrix: tuple[int, int, int],
                              pixel_spacing, centre) -> dict[str, Sequence]:
    """The functional groups every frame shares: anatomy and, per modality, the frame type
    and the acquisition macros of the Enhanced CT / MR Image IODs (``matrix``: frames, rows,
    columns; ``centre``: the volume's centre, patient mm)."""
    frames, rows, columns = matrix
    groups = {"FrameAnatomySequence": Sequence([_item(
        AnatomicRegionSequence=Sequence([_code("12738006", "SCT", "Brain")]), FrameLaterality="U")])}
    frame_type = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    if modality == "MR":
        groups.update(
            MRImageFrameTypeSequence=Sequence([_item(
                FrameType=frame_type, PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
                VolumeBasedCalculationTechnique="NONE", ComplexImageComponent="MAGNITUDE",
                AcquisitionContrast=protocol.contrast)]),
            MRTimingAndRelatedParametersSequence=Sequence([_item(
                RepetitionTime=protocol.repetition_ms, FlipAngle=protocol.flip_deg,
                EchoTrainLength=protocol.echo_train, RFEchoTrainLength=protocol.echo_train,
                GradientEchoTrainLength=1 if protocol.scanning_sequence == "GR" else 0,
                SpecificAbsorptionRateSequence=Sequence([_item(SpecificAbsorptionRateDefinition="IEC_WHOLE_BODY",
                                                               SpecificAbsorptionRateValue=0.5)]),
                OperatingModeSequence=Sequence([_item(OperatingModeType="STATIC FIELD",
                                                      OperatingMode="IEC_NORMAL")]))]),
            MRFOVGeometrySequence=Sequence([_item(
                InPlanePhaseEncodingDirection="ROW", MRAcquisitionFrequencyEncodingSteps=columns,
                MRAcquisitionPhaseEncodingStepsInPlane=rows, PercentSampling=100.0, PercentPhaseFieldOfView=100.0,
                **({"MRAcquisitionPhaseEncodingStepsOutOfPlane": frames}
                   if protocol.acquisition_type == "3D" else {}))]),
            MREchoSequence=Sequence([_item(EffectiveEchoTime=protocol.echo_ms)]),
            MRModifierSequence=Sequence([_item(
                InversionRecovery="NO", FlowCompensation="NONE", T2Preparation="NO",
                SpectrallySelectedExcitation="NONE", SpatialPresaturation="NONE", PartialFourier="NO",
                ParallelAcquisition="NO")]),
            MRImagingModifierSequence=Sequence([_item(
                MagnetizationTransfer="NONE", BloodSignalNulling="NO", Tagging="NONE",
                TransmitterFrequency=127.74, PixelBandwidth=200.0)]),
            MRReceiveCoilSequence=Sequence([_item(ReceiveCoilName="HEAD", ReceiveCoilManufacturerName="",
                                                  ReceiveCoilType="VOLUME", QuadratureReceiveCoil="NO")]),
            MRTransmitCoilSequence=Sequence([_item(TransmitCoilName="BODY", TransmitCoilManufacturerName="",
                                                   TransmitCoilType="BODY")]),
            MRAveragesSequence=Sequence([_item(NumberOfAverages=1.0)]),
        )
    else:
        groups.update(
            CTImageFrameTypeSequence=Sequence([_item(
                FrameType=frame_type, PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
                VolumeBasedCalculationTechnique="NONE")]),
            IrradiationEventIdentificationSequence=Sequence([_item(IrradiationEventUID="1.2.826.0.1.3680043.10.1234.9")]),
            CTAcquisitionTypeSequence=Sequence([_item(AcquisitionType="SPIRAL", ConstantVolumeFlag="NO",
                                                      FluoroscopyFlag="NO")]),
            CTAcquisitionDetailsSequence=Sequence([_item(
                DataCollectionDiameter=500.0, RevolutionTime=0.5, SingleCollimationWidth=0.625,
                TotalCollimationWidth=40.0, TableHeight=150.0, GantryDetectorTilt=0.0, RotationDirection="CW")]),
            CTTableDynamicsSequence=Sequence([_item(TableSpeed=40.0, TableFeedPerRotation=20.0,
                                                    SpiralPitchFactor=0.5)]),
            CTGeometrySequence=Sequence([_item(DistanceSourceToDetector=1000.0,
                                               DistanceSourceToDataCollectionCenter=540.0)]),
            CTReconstructionSequence=Sequence([_item(
                ConvolutionKernel="STANDARD", ConvolutionKernelGroup="SOFT_TISSUE",
                ReconstructionDiameter=f"{max(rows * pixel_spacing[0], columns * pixel_spacing[1]):.6g}",  # DS: 16 chars
                ReconstructionPixelSpacing=[float(v) for v in pixel_spacing], ReconstructionAngle=360.0,
                ImageFilter="NONE", ReconstructionAlgorithm="FILTER_BACK_PROJ")]),
            CTPositionSequence=Sequence([_item(TablePosition=0.0,
                                               ReconstructionTargetCenterPatient=[float(v) for v in centre],
                                               DataCollectionCenterPatient=[float(v) for v in centre])]),
            CTExposureSequence=Sequence([_item(ExposureTimeInms=500.0, XRayTubeCurrentInmA=300.0,
                                               ExposureInmAs=150.0, ExposureModulationType="NONE", CTDIvol=40.0)]),
            CTXRayDetailsSequence=Sequence([_item(KVP=120.0, FocalSpots=[1.2], FilterType="HEAD",
                                                  FilterMaterial="ALUMINUM")]),
        )
    return groups


def frame_content(index: int) -> Dataset:
    """The Frame Content item of frame ``index`` (0-based) of the one stack."""
    return _item(StackID="1", InStackPositionNumber=index + 1, DimensionIndexValues=[1, index + 1],
                 FrameAcquisitionDateTime=STUDY_DATE + STUDY_TIME, FrameReferenceDateTime=STUDY_DATE + STUDY_TIME,
                 FrameAcquisitionDuration=1000.0)
