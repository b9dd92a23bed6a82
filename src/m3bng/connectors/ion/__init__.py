"""Infor ION: receiving BODs (bod, ims, ingest) and sending ConfirmBODs (confirm, client)."""
