"""bhyve (FreeBSD): argv.py builds its command lines from a VmConfig, backend.py runs them
(bhyvectl, /dev/vmm, nmdm consoles). Chosen by kvm.hypervisor.current(); never imports qemu/."""
