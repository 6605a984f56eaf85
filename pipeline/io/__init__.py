"""Reading and writing images: any accepted image (`image`), DICOM series (`dicom`), NIfTI
(`nifti`), DICOM writing (`dicomwriter`, `iod`), the RSNA tables (`rsna`), uploaded archives
(`archive`)."""
