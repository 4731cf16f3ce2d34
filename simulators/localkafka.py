"""A genuine single-node Apache Kafka (KRaft) broker on 127.0.0.1, without Docker.

The broker's jars are resolved from Maven Central with Maven (a resolve-only POM, nothing is built) into a
cache folder, ``.kafka/`` under the working directory unless ``IPAAS_KLAVIYO_KAFKA_HOME`` says otherwise.
Java 17+ and Maven must be on the PATH. Used by ``ipaas-klaviyo kafka start|stop|status``, the test
fixtures and ``.ci/run``.

``<home>/broker.pid`` records the broker ``kafka start`` started (the one ``kafka status``/``stop`` and the demo
find). A broker started with ``record=False`` (the demo's own, the test fixtures') keeps its pid in its own run
folder and never touches the recorded one; ``stop`` removes ``broker.pid`` only when it records the broker stopped.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"

_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <!-- Resolve-only: the Apache Kafka broker runtime from Maven Central. Nothing is built. -->
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.ipaas-klaviyo</groupId><artifactId>kafka-broker-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version></dependency>
    <!-- SLF4J 1.7 binding: left out of Kafka's published POM, without it the broker logs nothing -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{LOG4J_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId>
      <version>{LOG4J_VERSION}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""

_SERVER_PROPERTIES = """process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data_dir}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
num.network.threads=2
num.io.threads=4
log.segment.bytes=67108864
# a deleted topic's files (and their file descriptors) go after 1 s, not Kafka's 60 s: tests delete many topics
file.delete.delay.ms=1000
"""


class BrokerError(RuntimeError):
    """The local broker could not be installed, started or stopped."""


@dataclass(frozen=True)
class LocalBroker:
    """A running (or recorded) local broker."""

    home: Path
    port: int
    pid: int

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"


def kafka_home() -> Path:
    return Path(os.environ.get("IPAAS_KLAVIYO_KAFKA_HOME", ".kafka")).resolve()


def install(home: Path | None = None) -> Path:
    """Resolve the broker's jars into ``<home>/libs`` (once; a marker file records the version)."""
    home = home or kafka_home()
    libs = home / "libs"
    marker = libs / f".kafka-{KAFKA_VERSION}"
    if marker.exists():
        return libs
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise BrokerError(f"{tool} is not on the PATH; the local broker needs Java 17+ and Maven")
    home.mkdir(parents=True, exist_ok=True)
    pom = home / "kafka-pom.xml"
    pom.write_text(_POM)
    if libs.exists():
        shutil.rmtree(libs)
    result = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={libs}"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise BrokerError(f"resolving the Kafka jars failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    marker.touch()
    return libs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _java_opts(home: Path, logs: Path) -> list[str]:
    return [
        "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
        "-XX:+ExplicitGCInvokesConcurrent", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}", f"-Dkafka.logs.dir={logs}",
    ]


def start(port: int | None = None, home: Path | None = None, timeout_s: float = 90.0, *,
          record: bool = True) -> LocalBroker:
    """Install if needed, format fresh storage and start the broker; return once it answers.

    ``record``: write ``<home>/broker.pid`` (refused while it records a running broker); else the broker is the
    caller's alone, and only its run folder knows its pid. A start that fails (or is interrupted) stops the JVM.
    """
    home = home or kafka_home()
    if record and (running := recorded(home)) is not None:
        raise BrokerError(f"a local broker already runs on {running.bootstrap_servers} (pid {running.pid}); "
                          "use it, or stop it first (`ipaas-klaviyo kafka stop`)")
    libs = install(home)
    port = port or _free_port()
    controller_port = _free_port()
    run_dir = home / "run" / str(port)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    data_dir, logs = run_dir / "data", run_dir / "logs"
    logs.mkdir(parents=True)
    (home / "log4j2.properties").write_text(_LOG4J2)
    props = run_dir / "server.properties"
    props.write_text(_SERVER_PROPERTIES.format(port=port, controller_port=controller_port, data_dir=data_dir))
    classpath = f"{libs}/*"
    opts = _java_opts(home, logs)
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    fmt = subprocess.run(
        ["java", *opts, "-cp", classpath, "kafka.tools.StorageTool", "format", "--standalone",
         f"--cluster-id={cluster_id}", "-c", str(props)],  # "=": an id may start with "-"
        capture_output=True, text=True, check=False,
    )
    if fmt.returncode != 0:
        raise BrokerError(f"formatting Kafka storage failed: {fmt.stdout}{fmt.stderr}")
    with (logs / "stdout.log").open("ab") as out:
        proc = subprocess.Popen(
            ["java", *opts, "-cp", classpath, "kafka.Kafka", str(props)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    broker = LocalBroker(home=home, port=port, pid=proc.pid)
    (run_dir / "broker.pid").write_text(f"{proc.pid} {port}\n")
    if record:
        (home / "broker.pid").write_text(f"{proc.pid} {port}\n")
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(f"the broker exited with {proc.returncode}; see {logs}/server.log")
            if _port_open(port) and _answers_admin(broker.bootstrap_servers):
                return broker
            time.sleep(0.5)
        raise BrokerError(f"the broker did not answer within {timeout_s:.0f}s; see {logs}/server.log")
    except BaseException:
        stop(broker)
        raise


def reuse_or_start(home: Path | None = None) -> tuple[LocalBroker, bool]:
    """The recorded broker when it runs (left to its owner), else a new unrecorded one; True: started here,
    so the caller stops it (``stop(broker)``)."""
    running = recorded(home)
    if running is not None:
        return running, False
    return start(home=home, record=False), True


def _answers_admin(bootstrap: str) -> bool:
    """True once the broker answers a metadata request (an admin call) on the PLAINTEXT listener."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            return bool(cluster.get("brokers"))
        except Exception:
            return False
        finally:
            await admin.close()

    # in a thread of its own, so start() also works when the caller already runs an event loop
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, probe()).result()


def _read_pid_file(path: Path) -> tuple[int, int] | None:
    try:
        pid_text, port_text = path.read_text().split()
        return int(pid_text), int(port_text)
    except (OSError, ValueError):
        return None


def recorded(home: Path | None = None) -> LocalBroker | None:
    """The broker recorded in the pid file, if its process is alive and its port open."""
    home = home or kafka_home()
    found = _read_pid_file(home / "broker.pid")
    if found is None:
        return None
    pid, port = found
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or the pid now belongs to someone else
        return None
    return LocalBroker(home=home, port=port, pid=pid) if _port_open(port) else None


def stop(broker: LocalBroker | None = None, timeout_s: float = 30.0) -> bool:
    """Stop the broker with SIGTERM (a controlled shutdown), SIGKILL after ``timeout_s``."""
    broker = broker or recorded()
    if broker is None:
        return False
    try:
        os.kill(broker.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(broker.pid, os.WNOHANG)
            if done:
                break
        except ChildProcessError:  # not our child: poll for its exit instead
            try:
                os.kill(broker.pid, 0)
            except ProcessLookupError:
                break
        time.sleep(0.2)
    else:
        os.kill(broker.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(broker.pid, 0)
    for pid_file in (broker.home / "broker.pid", broker.home / "run" / str(broker.port) / "broker.pid"):
        if _read_pid_file(pid_file) == (broker.pid, broker.port):  # another broker's record stays
            pid_file.unlink()
    return True
