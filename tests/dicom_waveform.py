"""A real ECG as a DICOM General ECG Waveform, for the tests of what edgemed reads and writes around DICOM ECGs.

pydicom reads waveforms but writes none, and the one DICOM ECG it ships (``waveform_ecg.dcm``, 12 standard leads)
holds no MLII, the lead the shipped beat models read; so a MIT-BIH record (MLII, V1 at 360 Hz, in mV) is stored
here as one 16-bit multiplex group in µV per count (MIT-BIH's 5 µV steps are exact in it), with a patient and
study of its own, the way a cart or a Holter export would carry it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_ecg_waveform(samples_mv: np.ndarray, fs: float, leads: tuple[str, ...], path: Path) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, GeneralECGWaveformStorage, generate_uid

    counts = np.round(samples_mv * 1000).astype("<i2")  # µV
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = GeneralECGWaveformStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = GeneralECGWaveformStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID, ds.StudyID = "ECG", "MITBIH^213", "mitdb213", "1"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName = "20261207", "120000", "", ""
    ds.PatientBirthDate, ds.PatientSex, ds.Manufacturer, ds.SeriesNumber, ds.InstanceNumber = "", "", "", 1, 1
    ds.ContentDate, ds.ContentTime, ds.AcquisitionDateTime = "20261207", "120000", "20261207120000"
    group = Dataset()
    group.MultiplexGroupTimeOffset, group.WaveformOriginality = 0.0, "ORIGINAL"
    group.NumberOfWaveformChannels, group.NumberOfWaveformSamples = counts.shape[1], counts.shape[0]
    group.SamplingFrequency, group.MultiplexGroupLabel = fs, "RHYTHM"
    channels = []
    for lead in leads:
        ch, src, unit = Dataset(), Dataset(), Dataset()
        src.CodeValue, src.CodingSchemeDesignator, src.CodeMeaning = lead, "99EDGEMED", lead
        unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = "uV", "UCUM", "microvolt"
        ch.ChannelSourceSequence, ch.ChannelSensitivityUnitsSequence = [src], [unit]
        ch.ChannelSensitivity, ch.ChannelSensitivityCorrectionFactor = 1.0, 1.0
        ch.ChannelBaseline, ch.ChannelSampleSkew, ch.WaveformBitsStored = 0.0, 0.0, 16
        channels.append(ch)
    group.ChannelDefinitionSequence = channels
    group.WaveformBitsAllocated, group.WaveformSampleInterpretation = 16, "SS"
    group.WaveformData = counts.tobytes()
    ds.WaveformSequence = [group]
    ds.save_as(path, enforce_file_format=True)
    return path
