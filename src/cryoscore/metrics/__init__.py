"""Judges of denoised micrographs against simulation ground truth."""
