"""A VM's ZFS data over time: snapshot sets across its datasets (snap.py), their schedule's keep
rules (snapauto.py), and images that VMs are cloned from (images.py)."""
