use super::*;
use proptest::prelude::*;
use tune_core::resources::MigInfo;
use tune_core::testing::{GIB, bundle, machine, request};

fn one(bundle: Bundle) -> ResourceRequest {
    request(vec![bundle], Placement::Pack)
}

fn never(cluster: &Cluster, request: &ResourceRequest) -> String {
    match cluster.place(request) {
        Err(Unplaceable::Never(reason)) => {
            assert_eq!(cluster.never_fits(request).as_deref(), Some(reason.as_str()));
            reason
        }
        other => panic!("expected never, got {other:?}"),
    }
}

#[test]
fn quarter_gpus_fill_one_device_before_the_next() {
    let mut cluster = Cluster::default();
    cluster.add_agent("a", machine(16.0, 64 * GIB, 2));
    let quarter = one(bundle(1.0, 0.25));
    for _ in 0..4 {
        let allocation = cluster.allocate(&quarter).unwrap();
        assert_eq!(allocation.cuda_visible_devices(0), "0");
        assert_eq!(
            allocation.bundles[0].gpus,
            [GpuShare {
                device: "0".into(),
                index: 0,
                share: 0.25
            }]
        );
    }
    assert_eq!(cluster.device_use("a"), [("0".to_owned(), 1.0), ("1".to_owned(), 0.0)]);
    assert_eq!(cluster.allocate(&quarter).unwrap().cuda_visible_devices(0), "1");
    let third = one(bundle(0.0, 0.333));
    let mut thirds = Cluster::default();
    thirds.add_agent("a", machine(4.0, 0, 1));
    for _ in 0..3 {
        assert_eq!(thirds.allocate(&third).unwrap().cuda_visible_devices(0), "0");
    }
    assert_eq!(thirds.place(&third), Err(Unplaceable::NotNow));
}

#[test]
fn whole_gpus_get_distinct_free_devices() {
    let mut cluster = Cluster::default();
    cluster.add_agent("a", machine(16.0, 64 * GIB, 2));
    let two = one(bundle(1.0, 2.0));
    let allocation = cluster.place(&two).unwrap();
    assert_eq!(allocation.cuda_visible_devices(0), "0,1");
    assert!(allocation.bundles[0].gpus.iter().all(|share| share.share == 1.0));
    let half = cluster.allocate(&one(bundle(1.0, 0.5))).unwrap();
    assert_eq!(cluster.place(&two), Err(Unplaceable::NotNow));
    assert_eq!(
        cluster
            .allocate(&one(bundle(1.0, 1.0)))
            .unwrap()
            .cuda_visible_devices(0),
        "1"
    );
    cluster.release(&half);
    assert_eq!(
        cluster.place(&one(bundle(1.0, 1.0))).unwrap().cuda_visible_devices(0),
        "0"
    );
    let cpu_only = cluster.allocate(&one(bundle(1.0, 0.0))).unwrap();
    assert!(cpu_only.bundles[0].gpus.is_empty());
    assert_eq!(cpu_only.cuda_visible_devices(0), "");
    assert_eq!(cpu_only.cuda_visible_devices(7), "");
}

#[test]
fn requests_that_can_never_fit_say_why() {
    let mut cluster = Cluster::default();
    assert_eq!(cluster.place(&one(bundle(1.0, 0.0))), Err(Unplaceable::NoAgents));
    assert_eq!(Unplaceable::NoAgents.to_string(), "no agent is registered");
    assert_eq!(Unplaceable::NotNow.to_string(), "waiting for free resources");
    assert_eq!(cluster.never_fits(&one(bundle(1.0, 0.0))), None);
    cluster.add_agent("a", machine(16.0, 4 * GIB, 1));
    cluster.add_agent("b", machine(8.0, 2 * GIB, 0));
    assert_eq!(
        never(&cluster, &one(bundle(1.0, 2.0))),
        "needs gpu=2 on one agent; largest agent has 1"
    );
    assert_eq!(
        never(
            &cluster,
            &request(vec![bundle(1.0, 1.0), bundle(1.0, 1.0)], Placement::Pack)
        ),
        "needs gpu=2 on one agent; largest agent has 1"
    );
    assert_eq!(
        never(
            &cluster,
            &request(vec![bundle(1.0, 0.6), bundle(1.0, 0.6)], Placement::Pack)
        ),
        "needs gpu=1.2 on one agent; largest agent has 1"
    );
    let memory = Bundle {
        memory: 8 * GIB,
        ..Bundle::default()
    };
    assert_eq!(
        never(&cluster, &one(memory)),
        "needs memory=8GiB on one agent; largest agent has 4GiB"
    );
    assert_eq!(
        never(&cluster, &one(bundle(32.0, 0.0))),
        "needs cpu=32 on one agent; largest agent has 16"
    );
    assert_eq!(
        never(&cluster, &request(vec![bundle(10.0, 0.0); 2], Placement::Pack)),
        "needs cpu=20 on one agent; largest agent has 16"
    );
    let mut nvme = Bundle::default();
    nvme.custom.insert("nvme".into(), 1.0);
    assert_eq!(
        never(&cluster, &one(nvme)),
        "needs nvme=1 on one agent; no agent has nvme"
    );
    assert_eq!(
        never(&cluster, &request(vec![Bundle::default(); 3], Placement::Spread)),
        "spread needs 3 agents; 2 are registered"
    );
    assert_eq!(
        never(&cluster, &request(vec![bundle(1.0, 1.0); 2], Placement::Spread)),
        "spread needs 2 agents that each hold one bundle; only 1 can"
    );
    assert_eq!(
        never(
            &cluster,
            &request(vec![bundle(1.0, 0.0), bundle(1.0, 3.0)], Placement::Spread)
        ),
        "bundle 1: needs gpu=3 on one agent; largest agent has 1"
    );
    let mut big = machine(32.0, 0, 0);
    big.custom.insert("nvme".into(), 1.0);
    cluster.add_agent("c", big);
    // cpu and memory each fit some agent, but no agent has both.
    let both = Bundle {
        cpu: 20.0,
        memory: GIB,
        ..Bundle::default()
    };
    assert_eq!(
        never(&cluster, &one(both)),
        "needs cpu=20, memory=1GiB on one agent; no agent has all of it"
    );
    let mut nvme = Bundle::default();
    nvme.custom.insert("nvme".into(), 2.0);
    assert_eq!(
        never(&cluster, &one(nvme)),
        "needs nvme=2 on one agent; largest agent has 1"
    );
    assert_eq!(
        never(&cluster, &one(bundle(1.0, f64::NAN))),
        "gpu = NaN: must be a finite number, at least 0"
    );
    let mut no_gpu = Cluster::default();
    no_gpu.add_agent("a", machine(4.0, GIB, 0));
    assert_eq!(
        never(&no_gpu, &one(bundle(1.0, 0.5))),
        "needs gpu=0.5 on one agent; no agent has a GPU"
    );
}

#[test]
fn pack_chooses_the_tightest_agent_and_spread_the_emptiest() {
    let mut cluster = Cluster::default();
    cluster.add_agent("big", machine(32.0, 64 * GIB, 0));
    cluster.add_agent("small", machine(4.0, 8 * GIB, 0));
    cluster.add_agent("small-2", machine(4.0, 8 * GIB, 0));
    cluster.add_agent("gpu", machine(64.0, 256 * GIB, 1));
    let packed = cluster
        .allocate(&request(vec![bundle(2.0, 0.0); 2], Placement::Pack))
        .unwrap();
    assert_eq!(packed.agents(), ["small"]);
    assert_eq!(cluster.place(&one(bundle(1.0, 0.0))).unwrap().agents(), ["small-2"]);
    assert_eq!(cluster.place(&one(bundle(3.0, 0.0))).unwrap().agents(), ["small-2"]);
    assert_eq!(cluster.place(&one(bundle(1.0, 0.5))).unwrap().agents(), ["gpu"]);
    let spread = cluster
        .allocate(&request(vec![bundle(1.0, 0.0); 3], Placement::Spread))
        .unwrap();
    assert_eq!(spread.agents(), ["gpu", "big", "small-2"]);
    assert_eq!(spread.bundles.len(), 3);
    // A spread bundle that only one agent can hold gets it, though an earlier bundle preferred it.
    let mut cluster = Cluster::default();
    cluster.add_agent("a", machine(32.0, 0, 0));
    cluster.add_agent("b", machine(8.0, 0, 0));
    let spread = cluster
        .place(&request(vec![bundle(1.0, 0.0), bundle(16.0, 0.0)], Placement::Spread))
        .unwrap();
    assert_eq!(spread.agents(), ["b", "a"]);
}

#[test]
fn mig_instances_are_the_devices() {
    let mut inventory = machine(16.0, 64 * GIB, 2);
    inventory.gpus[0].mig = ["MIG-a", "MIG-b"]
        .into_iter()
        .map(|uuid| MigInfo {
            uuid: uuid.into(),
            name: "3g.40gb".into(),
            memory: 40 * GIB,
        })
        .collect();
    let mut cluster = Cluster::default();
    cluster.add_agent("a", inventory);
    let whole = one(bundle(1.0, 1.0));
    let first = cluster.allocate(&whole).unwrap();
    assert_eq!(first.cuda_visible_devices(0), "MIG-a");
    assert_eq!(first.bundles[0].gpus[0].index, 0);
    assert_eq!(cluster.allocate(&whole).unwrap().cuda_visible_devices(0), "MIG-b");
    let third = cluster.allocate(&whole).unwrap();
    assert_eq!(third.cuda_visible_devices(0), "1");
    assert_eq!(third.bundles[0].gpus[0].index, 1);
    assert_eq!(cluster.place(&whole), Err(Unplaceable::NotNow));
    assert_eq!(
        cluster.place(&one(bundle(1.0, 4.0))),
        Err(Unplaceable::Never(
            "needs gpu=4 on one agent; largest agent has 3".into()
        ))
    );
    cluster.release(&first);
    assert_eq!(
        cluster.place(&one(bundle(1.0, 0.5))).unwrap().cuda_visible_devices(0),
        "MIG-a"
    );
}

#[test]
fn release_gives_capacity_back_once() {
    let mut cluster = Cluster::default();
    let mut inventory = machine(8.0, 16 * GIB, 1);
    inventory.custom.insert("nvme".into(), 1.0);
    cluster.add_agent("a", inventory);
    let total = cluster.free("a").unwrap();
    let mut heavy = Bundle {
        cpu: 6.0,
        gpu: 0.5,
        memory: 12 * GIB,
        ..Bundle::default()
    };
    heavy.custom.insert("nvme".into(), 1.0);
    let allocation = cluster.allocate(&one(heavy.clone())).unwrap();
    assert_eq!(
        cluster.free("a").unwrap(),
        Bundle {
            cpu: 2.0,
            gpu: 0.5,
            memory: 4 * GIB,
            custom: BTreeMap::from([("nvme".to_owned(), 0.0)]),
        }
    );
    assert_eq!(cluster.place(&one(heavy.clone())), Err(Unplaceable::NotNow));
    cluster.release(&allocation);
    assert_eq!(cluster.free("a").unwrap(), total);
    cluster.release(&allocation);
    assert_eq!(cluster.free("a").unwrap(), total);
    // Survives a JSON round trip.
    let allocation = cluster.allocate(&one(heavy.clone())).unwrap();
    let copy: Allocation = serde_json::from_str(&serde_json::to_string(&allocation).unwrap()).unwrap();
    cluster.release(&copy);
    assert_eq!(cluster.free("a").unwrap(), total);
    // Re-adding an agent forgets what was on it; removing one makes release a no-op.
    let allocation = cluster.allocate(&one(heavy)).unwrap();
    cluster.add_agent("a", machine(8.0, 16 * GIB, 1));
    let fresh = cluster.free("a").unwrap();
    assert_eq!(fresh.cpu, 8.0);
    cluster.release(&allocation);
    assert_eq!(cluster.free("a").unwrap(), fresh);
    assert!(cluster.remove_agent("a"));
    assert!(!cluster.remove_agent("a"));
    cluster.release(&allocation);
    assert!(cluster.is_empty());
    assert_eq!(cluster.free("a"), None);
    assert!(cluster.device_use("a").is_empty());
}

#[test]
fn reserve_takes_an_allocation_again_after_the_agent_is_re_added() {
    let mut cluster = Cluster::default();
    cluster.add_agent("a", machine(8.0, 16 * GIB, 2));
    let half = one(Bundle {
        cpu: 4.0,
        gpu: 0.5,
        memory: 8 * GIB,
        ..Bundle::default()
    });
    let first = cluster.allocate(&half).unwrap();
    let second = cluster.allocate(&half).unwrap();
    let both_used = cluster.device_use("a");
    cluster.add_agent("a", machine(8.0, 16 * GIB, 2));
    let fresh = cluster.free("a").unwrap();
    assert_eq!(fresh.cpu, 8.0);
    cluster.reserve(&first).unwrap();
    cluster.reserve(&second).unwrap();
    assert_eq!(cluster.device_use("a"), both_used);
    assert_eq!(cluster.free("a").unwrap().cpu, 0.0);
    assert_eq!(
        cluster.reserve(&first).unwrap_err().to_string(),
        "agent \"a\" does not have cpu=4, gpu=0.5, memory=8GiB free on devices [0]"
    );
    cluster.release(&first);
    cluster.release(&second);
    assert_eq!(cluster.free("a").unwrap(), fresh);
    cluster.add_agent("a", machine(8.0, 16 * GIB, 0));
    assert_eq!(
        cluster.reserve(&first).unwrap_err().to_string(),
        "agent \"a\" has no device 0 (it has 8 CPUs, 16GiB)"
    );
    assert!(cluster.remove_agent("a"));
    assert_eq!(
        cluster.reserve(&first).unwrap_err().to_string(),
        "agent \"a\" is not registered"
    );
}

#[test]
fn spread_puts_bundles_on_distinct_agents() {
    let mut cluster = Cluster::default();
    for name in ["a", "b", "c"] {
        cluster.add_agent(name, machine(8.0, 16 * GIB, 2));
    }
    let spread = request(vec![bundle(1.0, 1.0); 3], Placement::Spread);
    let allocation = cluster.allocate(&spread).unwrap();
    assert_eq!(allocation.agents(), ["a", "b", "c"]);
    for bundle in 0..3 {
        assert_eq!(allocation.cuda_visible_devices(bundle), "0");
    }
    let again = cluster.allocate(&spread).unwrap();
    assert_eq!(again.agents(), ["a", "b", "c"]);
    assert_eq!(again.cuda_visible_devices(0), "1");
    assert_eq!(cluster.place(&spread), Err(Unplaceable::NotNow));
    assert_eq!(
        cluster.agents().map(|(name, _)| name).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
}

#[derive(Debug, Clone)]
enum Op {
    Allocate(ResourceRequest),
    Release(prop::sample::Index),
}

fn inventory_strategy() -> impl Strategy<Value = Inventory> {
    (1u32..=16, 0u64..=64, prop::collection::vec(0usize..=3, 0..=4), 0u32..=2).prop_map(|(cpus, memory, migs, nvme)| {
        Inventory {
            cpus: f64::from(cpus),
            memory: memory * GIB,
            gpus: migs
                .iter()
                .enumerate()
                .map(|(index, migs)| GpuInfo {
                    index: index as u32,
                    uuid: format!("GPU-{index}"),
                    model: "Test".into(),
                    memory: 80 * GIB,
                    mig: (0..*migs)
                        .map(|mig| MigInfo {
                            uuid: format!("MIG-{index}-{mig}"),
                            name: "1g.10gb".into(),
                            memory: 10 * GIB,
                        })
                        .collect(),
                })
                .collect(),
            custom: if nvme > 0 {
                BTreeMap::from([("nvme".to_owned(), f64::from(nvme))])
            } else {
                BTreeMap::new()
            },
        }
    })
}

fn bundle_strategy() -> impl Strategy<Value = Bundle> {
    (
        prop::sample::select(vec![0.0, 0.5, 1.0, 2.0, 4.0]),
        prop::sample::select(vec![0.0, 0.1, 0.25, 0.333, 0.5, 0.75, 1.0, 2.0, 3.0]),
        0u64..=16,
        0u32..=1,
    )
        .prop_map(|(cpu, gpu, memory, nvme)| Bundle {
            cpu,
            gpu,
            memory: memory * GIB,
            custom: if nvme > 0 {
                BTreeMap::from([("nvme".to_owned(), 1.0)])
            } else {
                BTreeMap::new()
            },
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let request = (
        prop::collection::vec(bundle_strategy(), 1..=3),
        prop_oneof![Just(Placement::Pack), Just(Placement::Spread)],
    )
        .prop_map(|(bundles, placement)| ResourceRequest { bundles, placement });
    prop_oneof![
        3 => request.prop_map(Op::Allocate),
        1 => any::<prop::sample::Index>().prop_map(Op::Release),
    ]
}

/// Checks every held allocation against the inventories, independently of the cluster.
fn check_invariants(cluster: &Cluster, held: &[Allocation]) -> Result<(), TestCaseError> {
    for (name, inventory) in cluster.agents() {
        let devices = Capacity::of(inventory).devices;
        let mut cpu = 0;
        let mut memory = 0;
        let mut nvme = 0;
        let mut used = vec![0u64; devices.len()];
        for placement in held.iter().flat_map(|allocation| &allocation.bundles) {
            if placement.agent != name {
                continue;
            }
            let need = Need::of(&placement.bundle);
            cpu += need.cpu;
            memory += need.memory;
            nvme += need.custom.get("nvme").copied().unwrap_or(0);
            for share in &placement.gpus {
                let position = devices.iter().position(|device| device.id == share.device);
                prop_assert!(
                    position.is_some(),
                    "device {} is not schedulable on {name}",
                    share.device
                );
                let position = position.unwrap();
                prop_assert_eq!(devices[position].index, share.index);
                used[position] += to_milli(share.share);
            }
        }
        prop_assert!(
            cpu <= to_milli(inventory.cpus),
            "{name}: cpu {cpu} over {}",
            inventory.cpus
        );
        prop_assert!(memory <= inventory.memory, "{name}: memory over");
        prop_assert!(nvme <= to_milli(inventory.custom.get("nvme").copied().unwrap_or(0.0)));
        prop_assert!(
            used.iter().all(|share| *share <= MILLI),
            "{name}: device over 1: {used:?}"
        );
        let reported: Vec<u64> = cluster
            .device_use(name)
            .iter()
            .map(|(_, share)| to_milli(*share))
            .collect();
        prop_assert_eq!(&reported, &used);
        let free = cluster.free(name).unwrap();
        prop_assert_eq!(to_milli(free.cpu), to_milli(inventory.cpus) - cpu);
        prop_assert_eq!(free.memory, inventory.memory - memory);
    }
    Ok(())
}

proptest! {
    #[test]
    fn allocations_never_overcommit(
        inventories in prop::collection::vec(inventory_strategy(), 1..=3),
        ops in prop::collection::vec(op_strategy(), 1..40),
    ) {
        let mut cluster = Cluster::default();
        for (position, inventory) in inventories.iter().enumerate() {
            cluster.add_agent(&format!("agent-{position}"), inventory.clone());
        }
        let mut empty = Cluster::default();
        for (name, inventory) in cluster.agents() {
            empty.add_agent(name, inventory.clone());
        }
        let totals: Vec<Bundle> = cluster.agents().map(|(name, _)| cluster.free(name).unwrap()).collect();
        let mut held: Vec<Allocation> = Vec::new();
        for op in ops {
            match op {
                Op::Allocate(request) => match cluster.allocate(&request) {
                    Ok(allocation) => {
                        prop_assert_eq!(allocation.bundles.len(), request.bundles.len());
                        let agents = allocation.agents();
                        match request.placement {
                            Placement::Pack => prop_assert_eq!(agents.len(), 1),
                            Placement::Spread => prop_assert_eq!(agents.len(), request.bundles.len()),
                        }
                        for (placement, bundle) in allocation.bundles.iter().zip(&request.bundles) {
                            prop_assert_eq!(&placement.bundle, bundle);
                            let gpu = to_milli(bundle.gpu);
                            if gpu == 0 {
                                prop_assert!(placement.gpus.is_empty());
                            } else if gpu < MILLI {
                                prop_assert_eq!(placement.gpus.len(), 1, "a fraction is never split");
                                prop_assert_eq!(to_milli(placement.gpus[0].share), gpu);
                            } else {
                                let mut devices: Vec<&str> =
                                    placement.gpus.iter().map(|share| share.device.as_str()).collect();
                                prop_assert!(placement.gpus.iter().all(|share| share.share == 1.0));
                                devices.sort_unstable();
                                devices.dedup();
                                prop_assert_eq!(devices.len() as u64, gpu / MILLI);
                            }
                        }
                        held.push(allocation);
                    }
                    Err(Unplaceable::NotNow) => prop_assert!(empty.place(&request).is_ok()),
                    Err(Unplaceable::Never(reason)) => {
                        prop_assert!(empty.place(&request).is_err(), "never, yet fits when empty: {}", reason);
                    }
                    Err(Unplaceable::NoAgents) => return Err(TestCaseError::fail("no agents, yet agents are registered")),
                },
                Op::Release(index) => {
                    if !held.is_empty() {
                        let allocation = held.swap_remove(index.index(held.len()));
                        cluster.release(&allocation);
                    }
                }
            }
            check_invariants(&cluster, &held)?;
        }
        for allocation in &held {
            cluster.release(allocation);
        }
        let free: Vec<Bundle> = cluster.agents().map(|(name, _)| cluster.free(name).unwrap()).collect();
        prop_assert_eq!(free, totals);
    }
}
