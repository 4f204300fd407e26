"""kvm: run FreeBSD bhyve virtual machines out of ZFS datasets."""

__version__ = "0.1.0"
