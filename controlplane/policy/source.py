"""Where revisions come from: the working tree of a policy dir, or a git repository."""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Protocol

from controlplane.engine.bundle import PolicyBundle, load_bundle
from controlplane.errors import PolicyError
from controlplane.settings import Settings

GIT_TIMEOUT = 120


class PolicySource(Protocol):
    @property
    def description(self) -> str:
        """Where the policies come from, for revision records."""
        ...

    def fetch(self) -> PolicyBundle:
        """The source's current revision, read whole."""
        ...


@dataclass(frozen=True)
class WorkingTree:
    """A policy directory as it is on disk (the laptop and demo default)."""

    root: Path

    @property
    def description(self) -> str:
        return str(self.root.resolve())

    def fetch(self) -> PolicyBundle:
        return load_bundle(self.root)


@dataclass(frozen=True)
class GitRepository:
    """A git repository at a ref, mirrored under the data dir; a revision is the commit."""

    url: str
    ref: str
    subdir: str
    mirror: Path

    @property
    def description(self) -> str:
        sub = f" ({self.subdir})" if self.subdir else ""
        return f"{self.url}@{self.ref}{sub}"

    def fetch(self) -> PolicyBundle:
        self._update_mirror()
        commit = self._git("rev-parse", "--verify", f"{self.ref}^{{commit}}").strip()
        archive = subprocess.run(
            [
                "git",
                "-C",
                str(self.mirror),
                "archive",
                "--format=tar",
                commit,
                *([self.subdir] if self.subdir else []),
            ],
            capture_output=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
        if archive.returncode != 0:
            raise PolicyError(
                f"{self.description}: cannot read {self.subdir or 'the tree'} at {commit[:12]}: "
                f"{archive.stderr.decode(errors='replace').strip()}"
            )
        with tempfile.TemporaryDirectory(prefix="tollgate-policy-") as tmp:
            with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
                tar.extractall(tmp, filter="data")
            return _detached(load_bundle(Path(tmp) / self.subdir, revision=commit))

    def _update_mirror(self) -> None:
        if (self.mirror / "HEAD").exists():
            self._git("fetch", "--prune", "--quiet", "origin")
            return
        self.mirror.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["git", "clone", "--mirror", "--quiet", self.url, str(self.mirror)],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise PolicyError(
                f"cannot clone the policy repository {self.url}: {done.stderr.strip()}; "
                "check TOLLGATE_POLICY_REPO"
            )

    def _git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(self.mirror), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise PolicyError(
                f"{self.description}: git {args[0]} failed: {done.stderr.strip()}; "
                "check TOLLGATE_POLICY_REPO and TOLLGATE_POLICY_REF"
            )
        return done.stdout


def _detached(bundle: PolicyBundle) -> PolicyBundle:
    """The bundle no longer points into the temporary checkout."""
    return PolicyBundle(
        root=Path(f"git:{bundle.revision[:12]}"),
        revision=bundle.revision,
        modules=bundle.modules,
        data=bundle.data,
    )


def source_from(settings: Settings) -> PolicySource:
    if not settings.policy_repo:
        return WorkingTree(settings.policy_dir)
    key = hashlib.sha256(settings.policy_repo.encode()).hexdigest()[:12]
    return GitRepository(
        url=settings.policy_repo,
        ref=settings.policy_ref,
        subdir=settings.policy_subdir.strip("/"),
        mirror=settings.data_dir / "policy-repos" / key,
    )


WORKTREE = "worktree"


def source_at(settings: Settings, revision: str) -> PolicySource:
    """The policies as of `revision`: `worktree` (the policy dir as it is on disk), or a
    commit, branch or tag of the policy repository (TOLLGATE_POLICY_REPO, else the git
    repository holding TOLLGATE_POLICY_DIR)."""
    if revision == WORKTREE:
        return WorkingTree(settings.policy_dir)
    if settings.policy_repo:
        url, subdir = settings.policy_repo, settings.policy_subdir.strip("/")
    else:
        root = settings.policy_dir.resolve()
        try:
            top = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "--show-toplevel"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            raise PolicyError(
                f"{root} is not in a git repository, so revision {revision!r} cannot be read "
                f"from it; use a recorded revision (GET /v1/policies) or `{WORKTREE}`"
            ) from None
        url, subdir = top, root.relative_to(Path(top).resolve()).as_posix()
        subdir = "" if subdir == "." else subdir
    key = hashlib.sha256(url.encode()).hexdigest()[:12]
    return GitRepository(
        url=url, ref=revision, subdir=subdir, mirror=settings.data_dir / "policy-repos" / key
    )
