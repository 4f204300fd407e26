"""What an admin does to VMs and installs as a whole: create, clone, rename, destroy, vminfo and
vmlist (info, listing, listcache), kvminst (install, schedule, commands), rc.d scripts and systemd
units of VMs (rcinstall), and adopting other managers' VMs (importers/). Above storage/ and run/."""
