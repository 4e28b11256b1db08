"""Reading what users give edgemed and writing what it answers: images (PNG, JPEG, TIFF, NPY), DICOM frames
and waveforms, signal recordings (WFDB, CSV), input folders, result files and the pictures drawn on frames."""
