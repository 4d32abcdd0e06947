//! The engine's TCP and UDP flows, host forwards, the API socket and the periodic timers.

use super::*;

impl Engine {
    fn iss(&mut self) -> u32 {
        self.next_iss = self
            .next_iss
            .wrapping_mul(1_103_515_245)
            .wrapping_add(12_345);
        self.next_iss
    }

    pub(super) fn on_guest_tcp(&mut self, l4: &[u8], src: IpAddr, dst: IpAddr) -> Result<(), Drop> {
        let seg = tcp::parse(l4, src, dst, !self.csum_partial)?;
        self.wake.on_exchange(seg.payload.len(), Instant::now);
        let key = FlowKey {
            guest_port: seg.src_port,
            remote: SocketAddr::new(dst, seg.dst_port),
        };
        let now = self.now();
        if let Some(h) = self.tcp.find(&key) {
            let flow = self.tcp.get_mut(h).ok_or(Drop::HostError)?.1;
            let v = flow
                .conn
                .on_segment(&seg, &mut flow.sock, &mut self.tx, now);
            if flow.conn.ack_owed() && !self.ack_due.contains(&h) {
                self.ack_due.push(h);
            }
            self.finish_tcp(h, v);
            return Ok(());
        }
        let ends = self.ends(dst, src);
        if !seg.has(sluice_dataplane::wire::tcp::SYN) || seg.has(sluice_dataplane::wire::tcp::ACK) {
            TcpConn::refuse(ends, &seg, &mut self.tx);
            return Err(Drop::Refused);
        }
        let opened = self
            .net
            .host_target(key.remote, self.resolver)
            .and_then(|to| {
                TcpSock::connect(to, self.net.outbound_for(to)).map_err(|_| Drop::HostError)
            });
        let sock = match opened {
            Ok(s) => s,
            Err(why) => {
                TcpConn::refuse(ends, &seg, &mut self.tx);
                return Err(why);
            }
        };
        let iss = self.iss();
        let conn = TcpConn::from_guest_syn(ends, &seg, self.net.mtu, iss);
        let h = self
            .tcp
            .insert(key, TcpFlow { conn, sock })
            .inspect_err(|_| {
                TcpConn::refuse(ends, &seg, &mut self.tx);
            })?;
        self.register_tcp(h)
    }

    fn register_tcp(&mut self, h: usize) -> Result<(), Drop> {
        let flow = self.tcp.get_mut(h).ok_or(Drop::HostError)?.1;
        let r = self.poll.registry().register(
            &mut flow.sock.stream,
            Token(TCP_BASE + h),
            Interest::READABLE | Interest::WRITABLE,
        );
        if r.is_err() {
            flow.conn.reset(&mut self.tx);
            self.finish_tcp(h, Verdict::Reset);
            return Err(Drop::HostError);
        }
        Ok(())
    }

    fn finish_tcp(&mut self, h: usize, v: Verdict) {
        if v == Verdict::Keep {
            if self
                .tcp
                .get_mut(h)
                .is_some_and(|(_, f)| f.conn.window_watch(&f.sock))
                && !self.window_watch.contains(&h)
            {
                self.window_watch.push(h);
            }
            return;
        }
        if let Some(mut flow) = self.tcp.remove(h) {
            let _ = self.poll.registry().deregister(&mut flow.sock.stream);
            if v == Verdict::Reset {
                flow.sock.abort();
            }
        }
    }

    pub(super) fn on_tcp(&mut self, h: usize, writable: bool) {
        let now = self.now();
        let Some((_, flow)) = self.tcp.get_mut(h) else {
            return;
        };
        let v = if flow.conn.state() == tcp::State::Connecting {
            match flow.sock.connected() {
                Ok(true) => {
                    flow.conn.on_connected(&flow.sock, &mut self.tx, now);
                    Verdict::Keep
                }
                Ok(false) => Verdict::Keep,
                Err(_) => {
                    flow.conn.reset(&mut self.tx);
                    Verdict::Reset
                }
            }
        } else {
            if writable {
                flow.conn.on_writable(&flow.sock, &mut self.tx);
            }
            let before = self.tx.bytes;
            let v = flow.conn.push(&mut flow.sock, &mut self.tx, now);
            self.wake
                .on_exchange((self.tx.bytes - before) as usize, Instant::now);
            v
        };
        self.finish_tcp(h, v);
    }

    pub(super) fn on_guest_udp(&mut self, l4: &[u8], src: IpAddr, dst: IpAddr) -> Result<(), Drop> {
        let d = udp::parse(l4, src, dst, !self.csum_partial)?;
        let to_server = dst == IpAddr::from(Ipv4Addr::BROADCAST) || dst == self.net.gateway;
        if d.dst_port == dhcp::SERVER_PORT && to_server {
            return self.answer_dhcp(d.payload);
        }
        let key = FlowKey {
            guest_port: d.src_port,
            remote: SocketAddr::new(dst, d.dst_port),
        };
        let now = self.now();
        let h = match self.udp.find(&key) {
            Some(h) => h,
            None => {
                let to = self.net.host_target(key.remote, self.resolver)?;
                let sock = flows::udp_connect(to, self.net.outbound_for(to))
                    .map_err(|_| Drop::HostError)?;
                let flow = UdpFlow {
                    path: UdpPath::Own(sock),
                    guest: src,
                    last_used: now,
                    gso: true,
                };
                self.make_udp_room();
                let h = self.udp.insert(key, flow)?;
                if let UdpPath::Own(s) = &mut self.udp.get_mut(h).ok_or(Drop::HostError)?.1.path {
                    self.poll
                        .registry()
                        .register(s, Token(UDP_BASE + h), Interest::READABLE)
                        .map_err(|_| Drop::HostError)?;
                }
                h
            }
        };
        let flow = self.udp.get_mut(h).ok_or(Drop::HostError)?.1;
        flow.last_used = now;
        let sent = match &flow.path {
            UdpPath::Own(_) => {
                self.queue_udp(h, d.payload);
                return Ok(());
            }
            UdpPath::Forward { fwd, client } => {
                match self.listeners.iter().find(|(id, _)| id == fwd) {
                    Some((_, Listener::Udp(s))) => s.send_to(d.payload, *client),
                    _ => return Err(Drop::Refused),
                }
            }
        };
        sent.map(drop).map_err(|_| Drop::HostError)
    }

    fn answer_dhcp(&mut self, msg: &[u8]) -> Result<(), Drop> {
        let Some(n) = dhcp::reply(msg, &self.net, &mut self.tx.buf[udp::PAYLOAD_AT..])? else {
            return Ok(());
        };
        let ends = self.ends(self.net.gateway.into(), dhcp::REPLY_TO.into());
        let len = udp::frame(
            &mut self.tx.buf,
            &ends,
            dhcp::SERVER_PORT,
            dhcp::CLIENT_PORT,
            n,
        );
        self.tx.send(len);
        Ok(())
    }

    /// Sends the datagram at `udp::payload_at` of `n` bytes on flow `key` to the guest.
    fn udp_to_guest(&mut self, key: FlowKey, guest: IpAddr, n: usize) {
        let ends = self.ends(key.remote.ip(), guest);
        let len = udp::frame(
            &mut self.tx.buf,
            &ends,
            key.remote.port(),
            key.guest_port,
            n,
        );
        self.tx.send(len);
    }

    pub(super) fn on_udp(&mut self, h: usize) {
        loop {
            let Some((key, flow)) = self.udp.get_mut(h) else {
                return;
            };
            let (key, guest) = (*key, flow.guest);
            let UdpPath::Own(s) = &flow.path else { return };
            let at = udp::payload_at(key.remote.ip());
            let n = match s.recv(&mut self.tx.buf[at..MAX_FRAME - 40]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    let ends = self.ends(key.remote.ip(), guest);
                    let len = udp::port_unreachable(&mut self.tx.buf, &ends, &key);
                    self.tx.send(len);
                    continue;
                }
                Err(_) => continue,
            };
            flow.last_used = self.start.elapsed().as_millis() as u64;
            self.wake.on_exchange(n, Instant::now);
            self.udp_to_guest(key, guest, n);
        }
    }

    pub(super) fn on_listener(&mut self, id: u32) {
        let Some(fwd) = self.forwards.list().iter().find(|f| f.id == id).cloned() else {
            return;
        };
        loop {
            let Some((_, l)) = self.listeners.iter().find(|(i, _)| *i == id) else {
                return;
            };
            let r = match l {
                Listener::Tcp(l) => l.accept().map(|(s, peer)| self.accept_tcp(&fwd, s, peer)),
                Listener::Udp(s) => {
                    let at = udp::payload_at(fwd.guest_addr);
                    s.recv_from(&mut self.tx.buf[at..MAX_FRAME - 40])
                        .map(|(n, peer)| self.accept_udp(&fwd, n, peer))
                }
            };
            match r {
                Ok(Err(why)) => self.counters.drop(why),
                Ok(Ok(())) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return,
            }
        }
    }

    fn peer_key(&self, fwd: &HostFwd, peer: SocketAddr) -> Result<FlowKey, Drop> {
        let seen = self.net.guest_view(peer.ip(), fwd.guest_addr.is_ipv6())?;
        let remote = SocketAddr::new(seen, peer.port());
        Ok(FlowKey {
            guest_port: fwd.guest_port,
            remote,
        })
    }

    fn accept_tcp(
        &mut self,
        fwd: &HostFwd,
        stream: mio::net::TcpStream,
        peer: SocketAddr,
    ) -> Result<(), Drop> {
        let key = self.peer_key(fwd, peer)?;
        if self.tcp.find(&key).is_some() {
            return Err(Drop::FlowLimit);
        }
        let sock = TcpSock::new(stream).map_err(|_| Drop::HostError)?;
        let _ = sock.stream.set_nodelay(true);
        let (iss, now) = (self.iss(), self.now());
        let ends = self.ends(key.remote.ip(), fwd.guest_addr);
        let conn = TcpConn::to_guest(
            ends,
            key.remote.port(),
            fwd.guest_port,
            self.net.mtu,
            iss,
            now,
            &mut self.tx,
        );
        let h = self.tcp.insert(key, TcpFlow { conn, sock })?;
        self.register_tcp(h)
    }

    fn accept_udp(&mut self, fwd: &HostFwd, n: usize, peer: SocketAddr) -> Result<(), Drop> {
        let key = self.peer_key(fwd, peer)?;
        let now = self.now();
        let h = match self.udp.find(&key) {
            Some(h) => h,
            None => {
                self.make_udp_room();
                let path = UdpPath::Forward {
                    fwd: fwd.id,
                    client: peer,
                };
                self.udp.insert(
                    key,
                    UdpFlow {
                        path,
                        guest: fwd.guest_addr,
                        last_used: now,
                        gso: false,
                    },
                )?
            }
        };
        if let Some((_, flow)) = self.udp.get_mut(h) {
            flow.last_used = now;
        }
        self.udp_to_guest(key, fwd.guest_addr, n);
        Ok(())
    }

    /// Window updates for connections the guest may be stalled on.
    pub(super) fn check_windows(&mut self) {
        let mut watch = std::mem::take(&mut self.window_watch);
        watch.retain(|&h| match self.tcp.get_mut(h) {
            Some((_, flow)) => {
                flow.conn.on_window_check(&flow.sock, &mut self.tx);
                flow.conn.window_watch(&flow.sock)
            }
            None => false,
        });
        for h in watch {
            if !self.window_watch.contains(&h) {
                self.window_watch.push(h);
            }
        }
    }

    /// Queues a guest datagram of the own-socket flow `h` behind those already waiting; one
    /// too large for a batch leaves at once after them.
    fn queue_udp(&mut self, h: usize, payload: &[u8]) {
        if !self.udp_out.fits(h, payload.len()) {
            self.flush_udp();
        }
        if self.udp_out.push(h, payload) {
            return;
        }
        let sent = match self.udp.get_mut(h) {
            Some((
                _,
                UdpFlow {
                    path: UdpPath::Own(s),
                    ..
                },
            )) => s.send(payload).is_ok(),
            _ => false,
        };
        if !sent {
            self.counters.drop(Drop::HostError);
        }
    }

    /// Sends the datagrams waiting in the batch on their flow's socket, one `sendmmsg` (GSO
    /// runs where the flow's path takes them). A message the socket refuses is counted as
    /// dropped, and a path that refuses GSO gets its datagrams one by one from then on.
    pub(super) fn flush_udp(&mut self) {
        let Some(h) = self.udp_out.flow() else { return };
        let (batch, plan) = (&self.udp_out, &mut self.udp_plan);
        let Some((
            _,
            UdpFlow {
                path: UdpPath::Own(s),
                gso,
                ..
            },
        )) = self.udp.get_mut(h)
        else {
            self.udp_out.clear();
            return;
        };
        batch.plan(*gso, plan);
        let mut done = 0;
        while let Some(next) = plan.get(done) {
            match crate::sys::send_messages(s.as_fd(), batch.bytes(), &plan[done..]) {
                Ok(n) => done += n.max(1),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if next.seg != 0 && refuses_gso(&e) => {
                    *gso = false;
                    let sent: usize = plan[..done].iter().map(|m| m.count).sum();
                    batch.plan(false, plan);
                    done = sent;
                }
                Err(e) => {
                    // A full socket refuses the rest as well; another error only this one.
                    let last = if e.kind() == io::ErrorKind::WouldBlock {
                        plan.len()
                    } else {
                        done + 1
                    };
                    let lost: usize = plan[done..last].iter().map(|m| m.count).sum();
                    self.counters.drops(Drop::HostError, lost as u64);
                    done = last;
                }
            }
        }
        self.udp_out.clear();
    }

    fn remove_udp(&mut self, h: usize) {
        if self.udp_out.flow() == Some(h) {
            self.flush_udp();
        }
        if let Some(UdpFlow {
            path: UdpPath::Own(mut s),
            ..
        }) = self.udp.remove(h)
        {
            let _ = self.poll.registry().deregister(&mut s);
        }
    }

    /// A full UDP table gives up its least recently used flow (UDP has no end to wait for;
    /// a resolver making a flow per query would otherwise fill it).
    fn make_udp_room(&mut self) {
        if self.udp.len() < MAX_UDP_FLOWS {
            return;
        }
        let last_used = |e: &mut Self, h| e.udp.get_mut(h).map_or(0, |(_, f)| f.last_used);
        let lru = self
            .udp
            .handles()
            .into_iter()
            .min_by_key(|&h| last_used(self, h));
        if let Some(h) = lru {
            self.remove_udp(h);
            self.counters.udp_evicted += 1;
        }
    }

    pub(super) fn tick(&mut self, now: u64) {
        if self.net.ipv6 && now >= self.next_ra {
            self.send_router_advert();
            self.next_ra = now + v6::RA_INTERVAL_MS;
        }
        for h in self.tcp.handles() {
            let Some((_, flow)) = self.tcp.get_mut(h) else {
                continue;
            };
            if flow.conn.deadline().is_some_and(|d| d <= now) {
                let v = flow.conn.on_timer(&mut flow.sock, &mut self.tx, now);
                self.finish_tcp(h, v);
            }
        }
        for h in self.udp.handles() {
            if self
                .udp
                .get_mut(h)
                .is_some_and(|(_, f)| now - f.last_used.min(now) > UDP_IDLE_MS)
            {
                self.remove_udp(h);
            }
        }
        for h in self.ping.handles() {
            let expired = self
                .ping
                .get_mut(h)
                .is_some_and(|(_, f)| now - f.last_used.min(now) > UDP_IDLE_MS);
            if let Some(mut f) = expired.then(|| self.ping.remove(h)).flatten() {
                let _ = self.poll.registry().deregister(&mut f.sock);
            }
        }
    }

    pub(super) fn serve_api(&mut self) {
        loop {
            let Some((l, _)) = &self.api else { return };
            let Ok((conn, _)) = l.accept() else { return };
            let mut conn = std::os::unix::net::UnixStream::from(OwnedFd::from(conn));
            let _ = conn.set_nonblocking(false);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = vec![0u8; api::MAX_REQUEST];
            let n = conn.read(&mut buf).unwrap_or(0);
            let guests = api::Guests {
                v4: self.net.guest,
                v6: self.guest6,
            };
            let reply = match api::parse_request(&buf[..n], &guests) {
                Ok(req) => self.execute(req),
                Err(reply) => reply,
            };
            let _ = conn.write_all(reply.as_bytes());
            let _ = conn.shutdown(std::net::Shutdown::Write);
            // Drain what a too large request left unread, so the client gets the reply and
            // not a reset.
            let _ = conn.set_nonblocking(true);
            while conn.read(&mut buf).is_ok_and(|n| n > 0) {}
        }
    }

    fn execute(&mut self, req: Request) -> String {
        match req {
            Request::List => api::list_reply(self.forwards.list()),
            Request::Remove(id) => match self.forwards.remove(id) {
                Some(f) => {
                    if let Some(at) = self.listeners.iter().position(|(i, _)| *i == f.id) {
                        let (_, l) = self.listeners.remove(at);
                        let _ = match l {
                            Listener::Tcp(mut l) => self.poll.registry().deregister(&mut l),
                            Listener::Udp(mut s) => self.poll.registry().deregister(&mut s),
                        };
                    }
                    api::ok_reply()
                }
                None => api::error_reply("remove_hostfwd: bad arguments.id"),
            },
            Request::Add(fwd) => match self.listen(fwd) {
                Ok(id) => api::added_reply(id),
                Err(_) => api::error_reply("add_hostfwd: slirp_add_hostfwd failed"),
            },
        }
    }

    fn listen(&mut self, fwd: HostFwd) -> io::Result<u32> {
        let at = SocketAddr::new(fwd.host_addr, fwd.host_port);
        let mut l = match fwd.proto {
            Proto::Tcp => Listener::Tcp(TcpListener::bind(at)?),
            Proto::Udp => Listener::Udp(UdpSocket::bind(at)?),
        };
        let fwd = self.forwards.add(fwd);
        let token = Token(FWD_BASE + fwd.id as usize);
        let reg = self.poll.registry();
        match &mut l {
            Listener::Tcp(l) => reg.register(l, token, Interest::READABLE)?,
            Listener::Udp(s) => reg.register(s, token, Interest::READABLE)?,
        }
        self.listeners.push((fwd.id, l));
        Ok(fwd.id)
    }

    /// Removes the API socket file.
    pub fn close_api(&mut self) {
        if let Some((_, at)) = self.api.take() {
            let _ = crate::sys::unlink_at(std::os::fd::AsFd::as_fd(&at.dir), &at.name);
        }
    }
}

/// The hooks of the smoltcp translation ([`crate::tcp_smoltcp`]).
impl Engine {
    /// A guest IPv4 TCP packet with the smoltcp engine on: host forwards stay on the
    /// passt-style path; a new outbound connection gets a host stream and a socket of the
    /// stack, and the packet goes to the stack.
    pub(super) fn on_smol_tcp(
        &mut self,
        packet: &[u8],
        l4: &[u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<(), Drop> {
        let seg = tcp::parse(l4, src.into(), dst.into(), !self.csum_partial)?;
        let key = FlowKey {
            guest_port: seg.src_port,
            remote: SocketAddr::new(dst.into(), seg.dst_port),
        };
        if self.tcp.find(&key).is_some() {
            return self.on_guest_tcp(l4, src.into(), dst.into());
        }
        let Some(smol) = &mut self.smol else {
            return Err(Drop::Unsupported);
        };
        let syn =
            seg.has(sluice_dataplane::wire::tcp::SYN) && !seg.has(sluice_dataplane::wire::tcp::ACK);
        if smol.has(&key) || !syn {
            smol.queue(packet);
            if smol.backlog_full() {
                self.service_smol();
            }
            return Ok(());
        }
        // One listening socket per destination at a time: the stack takes what is queued
        // before a new one listens, and this SYN at once.
        self.service_smol();
        let ends = self.ends(dst.into(), src.into());
        let opened = self
            .net
            .host_target(key.remote, self.resolver)
            .and_then(|to| {
                flows::connect_stream(to, self.net.outbound_for(to)).map_err(|_| Drop::HostError)
            })
            .and_then(|stream| {
                let smol = self.smol.as_mut().ok_or(Drop::Unsupported)?;
                smol.open(key, stream, self.poll.registry())?;
                smol.queue(packet);
                self.service_smol();
                let smol = self.smol.as_mut().ok_or(Drop::Unsupported)?;
                smol.check_opened(&key, self.poll.registry())
            });
        if let Err(why) = opened {
            TcpConn::refuse(ends, &seg, &mut self.tx);
            return Err(why);
        }
        Ok(())
    }

    /// Runs the stack: queued guest packets in, bytes across, frames to the guest out.
    pub(super) fn service_smol(&mut self) {
        if let Some(smol) = &mut self.smol {
            smol.service(
                &mut self.tx,
                &self.net,
                self.guest_mac,
                self.poll.registry(),
            );
        }
    }

    /// A readiness event on a host stream of the stack.
    pub(super) fn on_smol_host(&mut self, h: usize) {
        if let Some(smol) = &mut self.smol {
            smol.on_host(h);
        }
    }

    /// Milliseconds until the stack's next timer.
    pub(super) fn smol_delay(&mut self) -> u64 {
        self.smol
            .as_mut()
            .and_then(SmolTcp::delay)
            .map_or(u64::MAX, |d| d.total_millis())
    }
}

/// True for the errors of a path that does not take UDP GSO messages (no checksum offload on
/// the way out, a segment over the path's MTU, a kernel without `UDP_SEGMENT`).
fn refuses_gso(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE | libc::ENOPROTOOPT)
    )
}
