"""Reading and writing images: DICOM series (`dicom`), DICOM writing (`dicomwriter`), the RSNA
tables (`rsna`), uploaded archives (`archive`)."""
