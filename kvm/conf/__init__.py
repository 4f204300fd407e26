"""A VM's own files: set.conf read (shconf) into a validated VmConfig (config, devices), edited
(confedit, edit), rendered from templates (templating); the `run` hooks (hooks); the cloud-init
seed (cloudinit); pinned firmware paths (firmware); whether anything can reach a VM (reach)."""
