"""Results a PACS understands: DICOM SEG, SR and secondary captures (``results``) and a DICOM node that
receives images and sends results on through an outbox (``node``)."""
