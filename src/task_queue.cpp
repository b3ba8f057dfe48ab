// procpool - the tasks a pool holds (see task_queue.hpp).
#include "task_queue.hpp"

namespace procpool::detail {

void task_queue::admit(std::shared_ptr<task> t) {
  auto& list = has_room() ? queued_ : parked_;
  t->where = &list == &queued_ ? task::place::queued : task::place::parked;
  tasks_[t->id] = t;
  task& placed = *t;
  placed.position = list.insert(list.end(), std::move(t));
}

auto task_queue::pop() -> std::shared_ptr<task> {
  if (queued_.empty()) return nullptr;
  auto t = std::move(queued_.front());
  queued_.pop_front();
  t->where = task::place::running;
  return t;
}

void task_queue::push_front(const std::shared_ptr<task>& t) {
  t->where = task::place::queued;
  t->position = queued_.insert(queued_.begin(), t);
}

auto task_queue::find(std::uint64_t id) const -> std::shared_ptr<task> {
  auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : it->second;
}

auto task_queue::take_unstarted(std::uint64_t id) -> std::shared_ptr<task> {
  auto it = tasks_.find(id);
  if (it == tasks_.end() || it->second->where == task::place::running) return nullptr;
  auto t = std::move(it->second);
  tasks_.erase(it);
  (t->where == task::place::parked ? parked_ : queued_).erase(t->position);
  return t;
}

auto task_queue::take_all_unstarted() -> std::vector<std::shared_ptr<task>> {
  std::vector<std::shared_ptr<task>> out;
  out.reserve(queued_.size() + parked_.size());
  for (auto* list : {&queued_, &parked_}) {
    for (auto& t : *list) {
      tasks_.erase(t->id);
      out.push_back(std::move(t));
    }
    list->clear();
  }
  return out;
}

auto task_queue::take_all() -> std::vector<std::shared_ptr<task>> {
  std::vector<std::shared_ptr<task>> out;
  out.reserve(tasks_.size());
  for (auto& [id, t] : tasks_) out.push_back(std::move(t));
  tasks_.clear();
  queued_.clear();
  parked_.clear();
  return out;
}

auto task_queue::admit_parked() -> std::vector<room_completion> {
  while (!parked_.empty() && queued_.size() < max_queue_) {
    auto t = std::move(parked_.front());
    parked_.pop_front();
    task& placed = *t;
    placed.where = task::place::queued;
    placed.position = queued_.insert(queued_.end(), std::move(t));
  }
  if (room_waiters_.empty() || !has_room()) return {};
  return take_room_waiters();
}

auto task_queue::take_room_waiter(std::uint64_t id) -> room_completion {
  auto node = room_waiters_.extract(id);
  return node.empty() ? room_completion{} : std::move(node.mapped());
}

auto task_queue::take_room_waiters() -> std::vector<room_completion> {
  std::vector<room_completion> out;
  out.reserve(room_waiters_.size());
  for (auto& [id, done] : room_waiters_) out.push_back(std::move(done));
  room_waiters_.clear();
  return out;
}

}  // namespace procpool::detail
