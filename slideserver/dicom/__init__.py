"""DICOM: every slide as a DICOMweb (PS3.18) study; storage from scanners and PACS.

STOW-RS and C-STORE bring instances in; slides held in a PACS are served like local ones.
"""
