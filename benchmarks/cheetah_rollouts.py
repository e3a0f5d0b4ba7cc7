"""Half-cheetah rollouts of a meta-batch with the robots simulated in 1 and in W worker processes.

    python benchmarks/cheetah_rollouts.py [--workers 1 2] [--tasks 10] [--trajectories 10] [--horizon 200]

Prints robot-steps per second for each number of workers (MuJoCo on the CPU; the policy is the
book's 100-100 network on the CPU), after checking that every setting samples the same
trajectories. At the paper's scale a MAML-TRPO meta-iteration simulates 40 tasks × 20
trajectories × 200 steps, twice.
"""

from __future__ import annotations

import argparse
import time

import torch


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--trajectories", type=int, default=10)
    parser.add_argument("--horizon", type=int, default=200)
    args = parser.parse_args()
    from mlcourse.nets import init_params
    from mlcourse.rl.cheetah import HalfCheetahTasks, missing_dependencies
    from mlcourse.rl.policy import GaussianPolicy
    from mlcourse.rl.rollout import rollout

    if missing_dependencies():
        raise SystemExit(missing_dependencies())
    torch.set_num_threads(1)
    torch.manual_seed(0)
    policy = GaussianPolicy(17, 6, hidden=(100, 100))
    theta = init_params(policy, "cpu")
    steps = args.tasks * args.trajectories * args.horizon
    reference, rates = None, {}
    for w in args.workers:
        env = HalfCheetahTasks("velocity", horizon=args.horizon, device="cpu", workers=w)
        tasks = env.sample_tasks(args.tasks, generator=torch.Generator().manual_seed(1))
        rollout(env, policy, theta, tasks, args.trajectories, generator=torch.Generator().manual_seed(2))  # start-up
        env.load_state_dict({"seed": 0})
        began = time.perf_counter()
        traj = rollout(env, policy, theta, tasks, args.trajectories, generator=torch.Generator().manual_seed(3))
        rates[w] = steps / (time.perf_counter() - began)
        env.close()
        same = reference is None or torch.equal(traj.obs, reference.obs) and torch.equal(traj.rewards, reference.rewards)
        reference = traj if reference is None else reference
        print(f"{w} worker(s): {rates[w]:,.0f} robot-steps/s"
              + (f"  ({rates[w] / rates[args.workers[0]]:.2f}x)" if w != args.workers[0] else "")
              + ("" if same else "  MISMATCH: other trajectories than with the first setting"), flush=True)


if __name__ == "__main__":
    main()
