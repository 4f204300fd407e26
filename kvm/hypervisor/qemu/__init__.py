"""qemu (KVM or TCG): argv.py maps a VmConfig onto qemu's command line, backend.py runs it and
talks QMP (qmp.py), accel.py probes KVM, passthru.py checks a host PCI device before a launch.
Chosen by kvm.hypervisor.current(); never imports bhyve/."""
