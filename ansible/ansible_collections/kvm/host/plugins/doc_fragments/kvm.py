# -*- coding: utf-8 -*-
# Copyright: the kvm project
# BSD-2-Clause (see the project's README)

from __future__ import annotations


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options:
  kvm_bin:
    description:
      - The kvm umbrella command on the host (C(kvm COMMAND ARGS), installed by C(pip install)).
      - Split as a shell would split it, so C(python3 -m kvm) works too.
    type: str
    default: kvm
  root:
    description:
      - The kvm install root (C(--root)); by default the one kvm finds (C(KVM_ROOT), the dataset marked kvm:root).
    type: path
notes:
  - The modules run the kvm commands and read only their JSON output (schema 1, see kvm(8) JSON OUTPUT) and
    their exit statuses (6 not found, 7 exists, 8 refused, 9 nothing to do).
"""
